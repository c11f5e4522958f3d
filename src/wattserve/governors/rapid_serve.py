"""RAPID-Serve's Adaptive Resource Manager as a step governor: the decode stream's compute share.

RAPID-Serve ("RAPID-Serve: Resource-efficient and Accelerated P/D Intra-GPU Disaggregation",
Masood, Gaur, Jayasena, arXiv 2601.11822) runs prefill and decode concurrently on the same GPUs. Its
manager, from the paper's text: when decode load is light or no prefill waits, both streams get
every compute unit and the hardware interleaves them ("overallocation"); under load, decode gets the
fewest compute units that keep its per-token latency within the ITL SLO for its current batch size
(an offline profile, minShare[batch]), and prefill gets the rest; masks change only at step
boundaries.

Our minShare comes from the latency model instead of a profile: for the decode batch about to run
(its size and its context per sequence, rounded up to a power of two so the table stays small) and
a prefill of the full prefill token budget beside it (the heaviest co-runner the prefill stream
runs), the smallest share, in the hardware's steps (`GpuSpec.share_step` of
`GpuSpec.compute_units`: groups of 8 SMs on H100, single CUs on MI300X), whose predicted iteration
(perf/corun.py) stays within `margin` x the SLO. "Light" means overallocation already meets that
target. No share meets it: decode gets all but one step. The time falls as the share grows, so the
search bisects (MI300X has 303 steps). The share holds until the batch changes,
so a decode run stays one closed-form event; the engine asks again at each boundary of either stream.
The margin 0.9 is ours (the paper's is not public), as in BiScale's decode governor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wattserve.catalog.gpus import GpuSpec
from wattserve.catalog.models import BatchShape
from wattserve.perf.corun import INTERFERENCE, demand, shared_time
from wattserve.perf.latency import LatencyModel
from wattserve.seam.governor import HOLD_UNTIL_CHANGE, UNGOVERNED, StepDecision, StepView


def min_decode_share(latency: LatencyModel, gpu: GpuSpec, seqs: int, ctx_per_seq: int, prefill_tokens: int,
                     target_s: float, clock_mhz: float | None = None) -> float | None:
    """The smallest decode share (a multiple of the hardware's step) whose decode iteration beside a
    `prefill_tokens` prefill stays within `target_s`; None when overallocation already does."""
    clock = clock_mhz if clock_mhz is not None else gpu.clock_max_mhz
    dec = latency.iteration(BatchShape(decode_seqs=seqs, decode_ctx=seqs * ctx_per_seq), clock)
    pre = latency.iteration(BatchShape.prefill(prefill_tokens), clock)
    other = demand(pre)
    itf = INTERFERENCE["decode"]
    if shared_time(dec, None, other, itf) <= target_s:
        return None
    units, step = gpu.compute_units, gpu.share_step
    lo, hi = 1, (units - step) // step
    while lo < hi:
        mid = (lo + hi) // 2
        if shared_time(dec, mid * step / units, other, itf) <= target_s:
            hi = mid
        else:
            lo = mid + 1
    return lo * step / units


@dataclass
class RapidServeGovernor:
    name: str = "rapid-serve"
    margin: float = 0.9
    """Fraction of the ITL (TPOT) SLO a decode iteration may take."""
    _table: dict[tuple[int, int, int], float | None] = field(default_factory=dict, repr=False)

    def decide(self, view: StepView) -> StepDecision:
        if view.phase != "decode":
            return UNGOVERNED
        shape = view.shape
        b = shape.decode_seqs
        slo = view.slo_tpot_s
        if b == 0 or slo is None or not view.queued_prompts():
            return UNGOVERNED
        per_seq = max(1, shape.decode_ctx // b)
        bucket = 1 << (per_seq - 1).bit_length()
        budget = view.prefill_token_budget
        key = (b, bucket, budget)
        if key not in self._table:
            self._table[key] = min_decode_share(view.latency, view.gpu, b, bucket, budget, self.margin * slo)
        share = self._table[key]
        if share is None:
            return UNGOVERNED
        return StepDecision(None, HOLD_UNTIL_CHANGE, share)
