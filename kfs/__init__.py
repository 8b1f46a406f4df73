"""kalshi-feature-store: shared configuration, lake I/O and the `kfs` command line."""

__version__ = "0.1.0"
