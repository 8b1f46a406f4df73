"""The wall-clock bound of a training run: a safety net, not a budget.

Every stage trains for a fixed amount of work (epochs, rollouts, environment steps), so the same seeds give
the same policy on any machine. A run may also carry a time limit (the nightly job does, so a slow machine
cannot hold the schedule forever); a stage that reaches it stops where it is and says so in its report,
and a result cut short by the clock is not reproducible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class TimeLimit:
    deadline: float | None = None   # time.monotonic() after which stages stop; None: no limit

    @classmethod
    def after(cls, seconds: float | None) -> "TimeLimit":
        return cls(None if seconds is None else time.monotonic() + seconds)

    def passed(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


NO_LIMIT = TimeLimit()
