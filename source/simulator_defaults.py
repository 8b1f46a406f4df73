"""The simulator's defaults and the names of its planted effects: light, for the command line's help, which
lists them without loading the simulator (numba, Arrow)."""

DEFAULT_MARKETS = 300
DEFAULT_DAYS = 7
DEFAULT_SEED = 7
DEFAULT_SIGNAL = 1.0
EFFECTS = ("depth_lean", "taker_run", "quiet_queue")
