"""A piecewise-constant signal over a run's time: a power budget (W) or a throughput target (tok/s).

Operators hand a cluster both as schedules that change at known times (a demand-response event
cuts the budget for 15 minutes; PALS, arXiv 2605.21427, tracks a QoS target that moves with the
day), so one type serves both, and a controller reads either with the same `at`."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

S = TypeVar("S", bound="StepSignal")


@dataclass(frozen=True)
class StepSignal:
    """values[i] holds from times[i] until times[i + 1]; the first value also holds before times[0].

    Times are non-decreasing (a repeated time: the later value wins from that time on)."""

    times: tuple[float, ...] = (0.0,)
    values: tuple[float, ...] = (0.0,)

    def __post_init__(self) -> None:
        if not self.times or len(self.times) != len(self.values):
            raise ValueError(f"a step signal needs as many times as values, at least one "
                             f"(got {len(self.times)} times, {len(self.values)} values)")
        object.__setattr__(self, "times", tuple(float(t) for t in self.times))
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))

    @classmethod
    def constant(cls: type[S], value: float) -> S:
        return cls((0.0,), (float(value),))

    def _index(self, t: float) -> int:
        return max(0, bisect.bisect_right(self.times, t) - 1)

    def at(self, t: float) -> float:
        return self.values[self._index(t)]

    def min_over(self, t0: float, t1: float) -> float:
        """The lowest value in force at any instant of [t0, t1]."""
        return min(self.values[self._index(t0):self._index(t1) + 1])

    def max_over(self, t0: float, t1: float) -> float:
        """The highest value in force at any instant of [t0, t1]."""
        return max(self.values[self._index(t0):self._index(t1) + 1])

    def peak(self) -> float:
        return max(self.values)

    def floor(self) -> float:
        return min(self.values)

    def change_times(self) -> Sequence[float]:
        return self.times[1:]
