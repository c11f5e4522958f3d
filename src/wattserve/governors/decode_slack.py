"""BiScale tier 2, decode: the lowest-power clock whose predicted iteration keeps TPOT in the SLO.

BiScale ("BiScale: Energy-Efficient Disaggregated LLM Serving via Phase-Aware Placement and DVFS",
Basit, Liu, Kong, Hu, arXiv 2602.18755; DualScale in v3) sets the decode clock every iteration from
the TPOT slack: decode is memory-bound, so a lower SM clock costs little time and saves power. For
the batch about to run we predict the iteration time at every supported clock with the latency
model and its power with the power model's `busy_power`, and take the lowest-power clock whose time
stays within `margin` x the TPOT SLO. Lowest power and lowest clock coincide for a monotone power
model, but we rank by power so a model where they do not (a fixed voltage floor, say) is still
honoured. No feasible clock: the maximum clock. No TPOT SLO: the tier-1 base clock (`base_mhz`),
or no request at all without one.

Decode context grows by `decode_seqs` tokens per iteration, so an iteration of total context C
takes alpha + beta*C (`LatencyModel.decode_coeffs`). The governor returns for how many iterations
its clock stays feasible, so a closed-form decode run in the simulator stays one event; it says
`HOLD_UNTIL_CHANGE` only when the clock never becomes infeasible as the context grows (beta <= 0).

The margin 0.9 is our choice (the paper's constants are not public): it leaves 10% for what the
model misses (sampling, host overheads) while keeping most of the slack to spend. A controller may
set it (`SetStepTarget`, `retarget`): wattserve's planner starts it at 0, which spends no slack,
and raises it where its model and the observed latencies show slack (control/planner.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from wattserve.catalog.models import BatchShape
from wattserve.seam.governor import HOLD_UNTIL_CHANGE, UNGOVERNED, StepDecision, StepView, check_share

KV_GUARD = 0.8
"""KV usage from which decode runs flat out: a slower clock holds sequences (and their blocks) longer."""


def decode_hold(alpha: float, beta: float, ctx: int, seqs: int, target_s: float) -> int:
    """Iterations (>= 1) an iteration of `alpha + beta*C` stays within `target_s` while C starts at
    `ctx` and grows by `seqs` per iteration; HOLD_UNTIL_CHANGE when it never leaves it."""
    if beta <= 0.0 or seqs <= 0:
        return HOLD_UNTIL_CHANGE
    room = (target_s - alpha) / beta - ctx
    if room < 0:
        return 1
    if room / seqs >= HOLD_UNTIL_CHANGE - 2:
        return HOLD_UNTIL_CHANGE
    n = math.floor(room / seqs) + 1
    while n > 1 and alpha + beta * (ctx + (n - 1) * seqs) > target_s:
        n -= 1
    while alpha + beta * (ctx + n * seqs) <= target_s and n < HOLD_UNTIL_CHANGE:
        n += 1
    return max(1, min(n, HOLD_UNTIL_CHANGE))


@dataclass
class SlackCaches:
    """What a decode-slack governor learns of its engine's models: the clocks by power per batch
    size, and the (alpha, beta) of a decode iteration per (sequences, clock). Engines alike (one GPU,
    latency and power model) may share them: a model of the cluster builds many such engines for
    every plan it judges (experiments/plan_sim.py), and learning afresh each time was most of the
    cost of simulating the governor."""

    by_power: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    coeffs: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)


@dataclass
class DecodeSlackGovernor:
    name: str = "decode-slack"
    margin: float = 0.9
    """Fraction of the TPOT SLO an iteration may take."""
    base_mhz: int | None = None
    """Tier 1's base clock: the clock with no SLO, and where the search starts."""
    feedback_s: float = 1.0
    """How often the observed TPOTs are read back (`view.recent_tpot_s()`)."""
    caches: SlackCaches = field(default_factory=SlackCaches, repr=False)
    """Its clocks by power and decode coefficients: its own, or shared by engines alike."""
    _scale: float = field(default=1.0, repr=False)
    _next_feedback: float = field(default=0.0, repr=False)

    def _feedback(self, view: StepView, target: float) -> None:
        """Shrink the per-iteration target while observed TPOTs run over it (stalls the model does
        not see: hand-off waits, preemptions, a batch that grew because iterations slowed), and let
        it recover 5% per period once they are back under it."""
        now = view.now_s
        if now < self._next_feedback:
            return
        self._next_feedback = now + self.feedback_s
        seen = view.recent_tpot_s()
        if not seen:
            return
        p90 = sorted(seen)[int(0.9 * (len(seen) - 1))]
        if p90 > target:
            self._scale = max(0.25, self._scale * target / p90)
        else:
            self._scale = min(1.0, self._scale * 1.05)

    @property
    def target_share(self) -> float:
        return self.margin

    def retarget(self, share: float) -> None:
        """A controller's target (`SetStepTarget`): iterations may take `share` of the TPOT SLO; 0
        spends no slack, as no SLO does (the base clock, or no request)."""
        check_share(share)
        self.margin = share

    def decode_clock(self, view: StepView) -> StepDecision:
        """The decision for a decode batch (also used by `BiScaleGovernor` on mixed steps). Guards
        to the maximum clock: KV usage >= 0.8 or sequences waiting for a slot (a slower clock would
        grow the backlog the iteration model does not price)."""
        slo = view.slo_tpot_s
        clocks = view.gpu.clocks
        if slo is None or self.margin <= 0.0:
            return StepDecision(self.base_mhz) if self.base_mhz is not None else UNGOVERNED
        if view.kv_usage >= KV_GUARD or view.queued_prompts():
            return StepDecision(clocks[-1], 1)
        shape = view.shape
        seqs = shape.decode_seqs
        if view.now_s >= self._next_feedback:
            self._feedback(view, slo * self.margin)
        target = slo * self.margin * self._scale
        lat = view.latency
        if shape.prefill_tokens or seqs == 0:
            for mhz in self._order(view, shape):
                if lat.iteration(shape, mhz).time_s <= target:
                    return StepDecision(mhz, 1)
            return StepDecision(clocks[-1], 1)
        ctx = shape.decode_ctx
        coeffs = self.caches.coeffs
        if len(coeffs) > 65536:
            coeffs.clear()
        for mhz in self._order(view, shape):
            ab = coeffs.get((seqs, mhz))
            if ab is None:
                ab = coeffs[(seqs, mhz)] = lat.decode_coeffs(seqs, mhz)
            alpha, beta = ab
            if alpha + beta * ctx <= target:
                return StepDecision(mhz, decode_hold(alpha, beta, ctx, seqs, target))
        return StepDecision(clocks[-1], 1)

    def _order(self, view: StepView, shape: BatchShape) -> list[int]:
        """Clocks by power of a representative batch (its own ranking, cached per batch size),
        lowest first; ties keep the one nearest the base clock, so the search starts there."""
        key = (view.gpu.name, shape.decode_seqs)
        order = self.caches.by_power.get(key)
        if order is None:
            lat, pw = view.latency, view.power
            rep = BatchShape(decode_seqs=max(1, shape.decode_seqs), decode_ctx=max(1, shape.decode_ctx))
            base = self.base_mhz if self.base_mhz is not None else view.gpu.clocks[-1]
            order = sorted(view.gpu.clocks,
                           key=lambda m: (pw.busy_power(lat.iteration(rep, m), m), abs(m - base)))
            self.caches.by_power[key] = order
        return order

    def decide(self, view: StepView) -> StepDecision:
        if view.phase != "decode":
            return UNGOVERNED
        return self.decode_clock(view)
