"""The names of the training profiles, for the command line and Dagster's run config, which list them without
importing torch (the configurations themselves are `training.pipeline.PROFILES`)."""

PROFILE_NAMES = ("nightly", "demo", "smoke")
DEFAULT_PROFILE = "nightly"
