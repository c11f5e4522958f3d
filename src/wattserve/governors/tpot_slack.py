"""Slack-based decode DVFS: run each decode iteration at the lowest clock that still meets the
TPOT SLO with a margin, and prefill at full clock.

This is the decode half of BiScale's per-iteration DVFS ("BiScale: Energy-Efficient Disaggregated
LLM Serving via Phase-Aware Placement and DVFS", arXiv 2602.18755): decode iterations are
memory-bound, so a lower SM clock costs little latency and saves power while TPOT has slack. The
margin (0.8 of the SLO) is our choice; BiScale's controller constants are not public. Without a TPOT
SLO it asks for nothing. The latency model predicts the iteration at each candidate clock, so the
decision is re-taken every iteration (`hold_iters=1`) as the context grows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wattserve.seam.governor import UNGOVERNED, StepDecision, StepView


@dataclass
class TpotSlackGovernor:
    name: str = "tpot-slack"
    margin: float = 0.8
    hold_iters: int = 1
    _last: int | None = field(default=None, repr=False)

    def decide(self, view: StepView) -> StepDecision:
        slo = view.slo_tpot_s
        if view.phase != "decode" or slo is None:
            self._last = None
            return UNGOVERNED
        target = slo * self.margin
        clocks = view.gpu.clocks
        shape = view.shape
        lo, hi = 0, len(clocks) - 1
        if view.latency.iteration(shape, clocks[hi]).time_s > target:
            return StepDecision(None, self.hold_iters)
        while lo < hi:
            mid = (lo + hi) // 2
            if view.latency.iteration(shape, clocks[mid]).time_s <= target:
                hi = mid
            else:
                lo = mid + 1
        self._last = clocks[lo]
        return StepDecision(clocks[lo], self.hold_iters)
