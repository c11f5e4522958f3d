"""BiScale tier 2: per-iteration DVFS, model-predictive for prefill and slack-aware for decode.

BiScale ("BiScale: Energy-Efficient Disaggregated LLM Serving via Phase-Aware Placement and DVFS",
Basit, Liu, Kong, Hu, arXiv 2602.18755; DualScale in v3) pairs a coarse tier (placement and a base
clock per phase, tier 1) with this fine tier, which re-picks the clock every iteration by phase:
`PrefillMpcGovernor` for prefill batches, `DecodeSlackGovernor` for decode. A colocated instance's
mixed step must serve both the prefill deadlines and the decode TPOT, so it runs at the higher of
the two clocks (a clock of None, "no request", counts as the maximum), for one iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wattserve.governors.decode_slack import DecodeSlackGovernor, SlackCaches
from wattserve.governors.prefill_mpc import PrefillMpcGovernor
from wattserve.seam.governor import StepDecision, StepView


@dataclass
class BiScaleGovernor:
    name: str = "biscale"
    prefill_base_mhz: int | None = None
    decode_base_mhz: int | None = None
    tpot_margin: float = 0.9
    horizon: int = 8
    caches: SlackCaches | None = None
    """The decode tier's caches (`SlackCaches`), when shared by engines alike."""
    prefill: PrefillMpcGovernor = field(init=False)
    decode: DecodeSlackGovernor = field(init=False)

    def __post_init__(self) -> None:
        self.prefill = PrefillMpcGovernor(horizon=self.horizon, base_mhz=self.prefill_base_mhz)
        self.decode = DecodeSlackGovernor(margin=self.tpot_margin, base_mhz=self.decode_base_mhz,
                                          **({} if self.caches is None else {"caches": self.caches}))

    @property
    def target_share(self) -> float:
        return self.decode.target_share

    def retarget(self, share: float) -> None:
        """A controller's target for the decode tier (`SetStepTarget`); the prefill tier keeps its
        TTFT deadlines."""
        self.decode.retarget(share)

    def decide(self, view: StepView) -> StepDecision:
        phase = view.phase
        if phase == "decode":
            return self.decode.decode_clock(view)
        if phase == "prefill":
            return self.prefill.prefill_clock(view)
        top = view.gpu.clocks[-1]
        p = self.prefill.prefill_clock(view).clock_mhz
        d = self.decode.decode_clock(view).clock_mhz
        return StepDecision(max(top if p is None else p, top if d is None else d), 1)
