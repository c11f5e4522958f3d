"""Where a GPU runs under a power cap and an optional locked clock.

A power cap gives the highest supported SM clock whose power fits under the cap: that is what the
GPU's power-management firmware converges to within milliseconds (see the flashinfer B200 trace in
literature_sensitivity_anchors.csv, S17), so the simulator treats it as the sustained clock of an
iteration. If even the lowest clock exceeds the cap, the GPU runs at its lowest clock and draws the
cap (firmware then throttles memory and voltage too); latency is that of the lowest clock.

Power falls monotonically with the clock, so the search gallops from a hint (the index the caller
found last time for similar work) in doubling steps, up or down, then bisects: successive
iterations of one kind rarely move more than a step or two, and a concurrent instance's clock, which
jumps whenever its prefill stream starts or stops, is found in a logarithmic number of steps.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wattserve.catalog.gpus import GpuSpec
from wattserve.catalog.models import BatchShape
from wattserve.perf.latency import IterCost, LatencyModel
from wattserve.perf.power import PowerModel


@dataclass(slots=True)
class OperatingPoint:
    clock_mhz: int
    cost: IterCost
    power_w: float
    index: int


def operating_point(gpu: GpuSpec, latency: LatencyModel, power: PowerModel, shape: BatchShape,
                    cap_w: float, locked_clock_mhz: int | None = None, hint: int | None = None,
                    clocks: Sequence[int] | None = None) -> OperatingPoint:
    """Highest clock (at or below a locked clock) whose busy power fits under cap_w."""
    clocks = clocks if clocks is not None else gpu.clocks
    hi = len(clocks) - 1
    if locked_clock_mhz is not None and clocks[hi] > locked_clock_mhz:
        hi = max(0, bisect_right(clocks, locked_clock_mhz) - 1)

    def at(i: int) -> OperatingPoint:
        c = clocks[i]
        cost = latency.iteration(shape, c)
        return OperatingPoint(c, cost, power.busy_power(cost, c), i)

    i = hi if hint is None or hint > hi else max(0, hint)
    pt = at(i)
    if pt.power_w <= cap_w:
        step = 1
        while i < hi:
            j = min(hi, i + step)
            up = at(j)
            if up.power_w > cap_w:
                return _highest_fitting(at, i, pt, j, cap_w)
            i, pt, step = j, up, step * 2
        return pt
    step = 1
    while True:
        j = max(0, i - step)
        below = at(j)
        if below.power_w <= cap_w:
            lo, lo_pt, hi_bad = j, below, i
            break
        if j == 0:
            return OperatingPoint(below.clock_mhz, below.cost, cap_w, 0)
        i, step = j, step * 2
    return _highest_fitting(at, lo, lo_pt, hi_bad, cap_w)


def _highest_fitting(at: Callable[[int], OperatingPoint], lo: int, lo_pt: OperatingPoint, hi_bad: int,
                     cap_w: float) -> OperatingPoint:
    """Bisect between a clock index that fits the cap (`lo`) and one above it that does not."""
    while hi_bad - lo > 1:
        mid = (lo + hi_bad) // 2
        m = at(mid)
        if m.power_w <= cap_w:
            lo, lo_pt = mid, m
        else:
            hi_bad = mid
    return lo_pt
