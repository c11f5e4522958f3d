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
    """Index of the clock chosen last time: the search starts there, since the context (and so the
    answer) moves by at most a step or two between iterations."""
    _decisions: dict[int | None, StepDecision] = field(default_factory=dict, repr=False)

    def _decision(self, mhz: int | None) -> StepDecision:
        d = self._decisions.get(mhz)
        if d is None:
            d = self._decisions[mhz] = StepDecision(mhz, self.hold_iters)
        return d

    def decide(self, view: StepView) -> StepDecision:
        slo = view.slo_tpot_s
        if view.phase != "decode" or slo is None:
            self._last = None
            return UNGOVERNED
        target = slo * self.margin
        clocks = view.gpu.clocks
        shape = view.shape
        lat = view.latency

        def meets(i: int) -> bool:
            return lat.iteration(shape, clocks[i]).time_s <= target

        top = len(clocks) - 1
        last = self._last
        if last is not None and meets(last):
            if last == 0 or not meets(last - 1):
                return self._decision(clocks[last])
            lo, hi = 0, last - 1
        else:
            lo, hi = (last + 1 if last is not None else 0), top
            if not meets(top):
                self._last = None
                return self._decision(None)
        while lo < hi:
            mid = (lo + hi) // 2
            if meets(mid):
                hi = mid
            else:
                lo = mid + 1
        self._last = lo
        return self._decision(clocks[lo])
