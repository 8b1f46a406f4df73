"""The policy's interface: slots, observation layout and actions, shared by the simulator, the policy,
the rules it is compared with and the exported artifact."""

from __future__ import annotations

import math

MAX_SLOTS = 5  # markets per observation (zero-padded, with a mask)
HOLD, BUY_YES, SELL_YES, BUY_NO, SELL_NO = range(5)
ACTIONS = ("HOLD", "BUY_YES", "SELL_YES", "BUY_NO", "SELL_NO")
N_ACTIONS = len(ACTIONS)
# Per slot, after the market's model features: YES contracts / limit, NO contracts / limit, 1 if this
# slot's market produced the current event, log age of the open position, its gain per contract if closed
POSITION_FEATURES = 5
# The age feature: log1p(events since opening) / AGE_SCALE (episodes are at most 2000 events)
AGE_SCALE = math.log1p(2000)
