"""A cluster power budget over time."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BudgetSignal:
    """A piecewise-constant cluster power budget: watts[i] holds from times[i] on."""

    times: tuple[float, ...] = (0.0,)
    watts: tuple[float, ...] = (0.0,)

    @staticmethod
    def constant(watts: float) -> BudgetSignal:
        return BudgetSignal((0.0,), (float(watts),))

    def at(self, t: float) -> float:
        i = bisect.bisect_right(self.times, t) - 1
        return self.watts[max(0, i)]

    def min_over(self, t0: float, t1: float) -> float:
        i0 = max(0, bisect.bisect_right(self.times, t0) - 1)
        i1 = max(0, bisect.bisect_right(self.times, t1) - 1)
        return min(self.watts[i0:i1 + 1])

    def change_times(self) -> Sequence[float]:
        return self.times[1:]
