"""The application: the `kfs` command line, the demo and the runners they call."""
