"""What the runtime engine shows its step governor before an iteration (`seam.governor.StepView`).

The runtime has no GPU profile of its own model (a test model runs on a CPU), so, as the modelled
power agent does (`runtime.power.modelled`), the view describes the batch as the catalog model
running on the catalog GPU that this worker's power is modelled as: a `PowerProfile`. The batch
shape follows the simulator's rule (`sim.instance`, `_start_mixed`): prefill chunks count their
causal query-key pairs and the context already cached, a prompt counts in `prefill_seqs` in the
iteration that finishes it, and a decode sequence contributes its whole context (cached tokens plus
the one it computes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass

from wattserve.catalog.gpus import GpuSpec, get_gpu
from wattserve.catalog.models import BatchShape, get_model
from wattserve.perf.latency import LatencyModel, RooflineLatencyModel
from wattserve.perf.power import PowerModel, UtilizationPowerModel
from wattserve.runtime.engine.latency_window import LatencyWindow
from wattserve.runtime.engine.sequence import Sequence

Composition = tuple[tuple[str, bool], ...]
"""(sequence id, is a decode row) for every row of a batch: a governor's `hold_iters` ends early
when this changes (a sequence joins, leaves, or moves from prefill to decode)."""


@dataclass(frozen=True)
class PowerProfile:
    """The catalog GPU and model whose latency and power stand for this engine's iterations."""

    gpu: GpuSpec
    latency: LatencyModel
    power: PowerModel

    @staticmethod
    def of(gpu: str = "h100", model: str = "llama-3.1-8b", tp: int = 1) -> PowerProfile:
        spec = get_gpu(gpu)
        return PowerProfile(spec, RooflineLatencyModel(spec, get_model(model), tp), UtilizationPowerModel.for_gpu(spec))


def is_decode_row(seq: Sequence, n: int) -> bool:
    """One new token after a generated one: a decode. A one-token prompt, or a recompute after
    preemption, is a prefill."""
    return n == 1 and seq.num_generated > 0 and seq.num_computed == len(seq.token_ids) - 1


def batch_shape(batch: Iterable[tuple[Sequence, int]]) -> tuple[BatchShape, Composition]:
    pt = seqs = pctx = dseqs = dctx = 0
    pairs = masked = 0.0
    comp: list[tuple[str, bool]] = []
    for seq, n in batch:
        start = seq.num_computed
        if is_decode_row(seq, n):
            dseqs += 1
            dctx += start + 1
            comp.append((seq.seq_id, True))
            continue
        pt += n
        pairs += n * (start + (n + 1) / 2)
        masked += n * (n - 1) / 2
        pctx += start
        if start + n >= len(seq.token_ids):
            seqs += 1
        comp.append((seq.seq_id, False))
    shape = BatchShape(prefill_tokens=pt, prefill_seqs=seqs, prefill_attn_pairs=pairs, prefill_ctx=pctx,
                       decode_seqs=dseqs, decode_ctx=dctx, prefill_masked_pairs=masked)
    return shape, tuple(comp)


def phase_of(shape: BatchShape) -> str:
    if shape.decode_seqs == 0:
        return "prefill"
    return "decode" if shape.prefill_tokens == 0 else "mixed"


@dataclass(frozen=True, slots=True)
class EngineStepView:
    """A `seam.governor.StepView` of one runtime iteration. The queue and the latency window are
    read only when the governor calls for them."""

    now_s: float
    phase: str
    shape: BatchShape
    kv_usage: float
    cap_w: float
    locked_clock_mhz: int | None
    slo_ttft_s: float | None
    slo_tpot_s: float | None
    profile: PowerProfile
    queue: Callable[[], Iterable[Sequence]]
    window: LatencyWindow
    prefill_token_budget: int
    """The scheduler's `max_batched_tokens`."""
    batch: list[tuple[Sequence, int]]
    """(sequence, tokens) rows of the batch about to run."""

    @property
    def gpu(self) -> GpuSpec:
        return self.profile.gpu

    @property
    def latency(self) -> LatencyModel:
        return self.profile.latency

    @property
    def power(self) -> PowerModel:
        return self.profile.power

    def queued_prompts(self) -> Seq[tuple[float, int]]:
        return sorted((s.arrival_s, s.uncomputed) for s in self.queue())

    def batch_arrivals_s(self) -> Seq[float]:
        return [s.arrival_s for s, n in self.batch if not is_decode_row(s, n) and s.num_computed + n >= len(s.token_ids)]

    def recent_ttft_s(self) -> Seq[float]:
        return self.window.ttft(self.now_s)

    def recent_tpot_s(self) -> Seq[float]:
        return self.window.tpot(self.now_s)
