"""The simulator's defaults and the names of its planted effects: light, for the command line's help, which
lists them without loading the simulator (numba, Arrow)."""

DEFAULT_MARKETS = 300
DEFAULT_DAYS = 7
DEFAULT_SEED = 7
DEFAULT_SIGNAL = 1.0
# Bounds of a universe, checked before anything is written: a year of days, markets far beyond any test or
# demo, and no day before 2020-01-02 (the recorder's tables refuse times before 2020-01-01, source/ddl.py)
# or more than a year ahead.
MAX_MARKETS = 20_000
MAX_DAYS = 366
EARLIEST_START = "2020-01-02"
EFFECTS = ("depth_lean", "taker_run", "quiet_queue")
