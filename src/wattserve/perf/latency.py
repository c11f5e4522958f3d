"""Iteration latency: a roofline per operator class, calibrated.

t = soft_max_p(linear FLOPs / (peak * eff_gemm * s), weight bytes / (HBM * eff_mem))
  + max(attention FLOPs / (peak * eff_attn * s), KV bytes / (HBM * eff_mem))
  + elementwise bytes / (HBM * eff_mem) + TP all-reduce + MoE all-to-all
  + step overhead + seq overhead * sequences + prompt overhead * prompts completed
  + layer overhead * layers + comm overhead * all-reduce calls
  + mixed overhead (a step that holds prompt chunks and decodes together),
with s = clock / max clock and soft_max_p(a, b) = (a**p + b**p)**(1/p). The soft maximum models GEMMs near
the ridge point, where neither compute nor weight streaming fully hides the other. Compute time scales
with the SM clock; memory time does not (the HBM clock is independent of the SM clock on
H100/A100/MI300X).

Mixture-of-experts (docs/moe.md): expert weight reads are the distinct experts a layer touches
(ModelSpec.experts_touched; under expert parallelism, those the busiest rank touches, read whole),
expert FLOPs follow the busiest rank's share of assignments, and with ep > 1 every MoE layer adds a
dispatch and a combine all-to-all timed by perf/collectives.py from APEX+'s NCCL profile. That
communication scales with neither the SM clock nor the cap, and IterCost counts it as neither
compute nor memory busy time, so the power model sees a communication-heavy step as less busy.

Calibration (docs/calibration.md holds the error table; `wattserve calibrate` regenerates it):
- EFF_GEMM 0.76: Vidur's H100 Llama-2-7B profile reaches 734-768 TFLOP/s (of 989) in the four
  GEMMs of a layer at 1024-4096 tokens (anchors/vidur/.../compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv).
- EFF_MEM 0.79: the same profile streams a layer's 404 MB of weights in 0.152 ms at 1-8 tokens.
- GEMM_P 1.5: the same profile's GEMM time at 128 and 512 tokens (0.180 and 0.329 ms per layer) lies
  between the pure roofline and the sum of compute and memory time; p = 1.5 matches both within 3%.
- EFF_ATTN 0.55: FlashAttention-3 (Shah et al., 2024) reports about 500-660 TFLOP/s for causal BF16
  forward at head dim 128 on H100.
- eff_kv (KV-cache reads), seq_overhead_s (per sequence in the batch: sampling, block tables, metadata),
  prompt_overhead_s (per prompt the step completes: its first token's bookkeeping and, on a
  disaggregated prefill worker that exports KV inside its step loop, the export),
  layer_overhead_s (per layer: kernel launches a CUDA graph does not hide) and comm_overhead_s (per
  all-reduce: synchronisation beyond the wire time, what makes TP scale worse than its bandwidth) are
  the terms a perf profile fits per engine (perf/perf_profile.py); with their defaults (eff_kv =
  EFF_MEM, the others 0) the model is the one fitted to ML.ENERGY below.
- attn_masked_share (0..1): the share of each prefill chunk's masked pairs (above its causal
  diagonal, BatchShape.prefill_masked_pairs) that the engine's attention computes anyway, priced as
  attention FLOPs. 0 is a kernel that skips every masked pair (the default: FlashAttention at
  ML.ENERGY's prompt lengths, where the diagonal tiles are a small part of the square); 1 is one that
  computes each chunk's full rectangle. Our CPU engine (PyTorch's scaled_dot_product_attention, a
  chunk after cached context through an explicit mask) times as the second kind at up to 512
  tokens. Its grid profile of 2026-12-07 (`wattserve validate`, three runs) shows it: a 512-token prompt
  took 12.3-13.7 ms, two 256-token prompts 5.9-6.8 ms, and a 256-token prompt after 128 cached
  tokens 4.4-4.8 ms, about 50 ns per pair of the full rectangle in each. Fitted to the grid profiles
  of three later validate runs (their grid_profile.json), the share came out at 0.57, 0.89 and 1.0.
- mixed_overhead_s: what a step pays for holding prompt chunks and decodes together beyond the two
  apart: both attention paths' metadata and calls (vLLM's chunked-prefill batches build prefill and
  decode attention metadata and run both kernels; so does our engine). In the three validate runs'
  grid profiles it came out at 0.19, 0.21 and 0.27 ms. In the three earlier runs' grids a 32-token
  prompt beside two decodes of 256 tokens took 1.22-1.41 ms, where the prompt alone took 0.76-0.79 ms
  and the two decodes alone 0.60-0.67 ms, most of each a fixed cost that a step pays once (the
  smallest steps took 0.57-0.65 ms).
- OVERHEAD_S: fitted with the power constants by scripts/fit_calibration.py to ML.ENERGY v3 median
  inter-token latency on H100 (anchors/mlenergy/v3_leaderboard/v3_configs_flat.csv): the per-step
  time vLLM spends outside GPU kernels that CUDA graphs do not hide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from wattserve.catalog.gpus import GpuSpec
from wattserve.catalog.models import BatchShape, ModelSpec
from wattserve.perf.collectives import AllToAllFit, alltoall_fit

EFF_GEMM = 0.76
EFF_MEM = 0.79
EFF_ATTN = 0.55
GEMM_P = 1.5
OVERHEAD_S = 0.392e-3


@dataclass(slots=True)
class IterCost:
    """Time of one iteration and how much of it the SMs and HBM are busy."""

    time_s: float
    compute_s: float
    memory_s: float

    @property
    def compute_util(self) -> float:
        return min(1.0, self.compute_s / self.time_s) if self.time_s > 0 else 0.0

    @property
    def memory_util(self) -> float:
        return min(1.0, self.memory_s / self.time_s) if self.time_s > 0 else 0.0


class LatencyModel(Protocol):
    """Time of one engine iteration. A profiled or fitted model can replace the roofline."""

    def iteration(self, shape: BatchShape, clock_mhz: float) -> IterCost: ...

    def decode_coeffs(self, seqs: int, clock_mhz: float) -> tuple[float, float]:
        """(alpha, beta) such that a decode-only iteration of `seqs` sequences with total
        context C takes alpha + beta * C seconds. The simulator jumps over runs of decode
        iterations in closed form with these."""
        ...


@dataclass(frozen=True)
class RooflineLatencyModel:
    gpu: GpuSpec
    model: ModelSpec
    tp: int = 1
    ep: int = 1
    """Expert-parallel ranks (1, or tp: experts spread whole over the TP group)."""
    expert_skew: float | None = None
    """The busiest expert's share of (token, expert) assignments; None: uniform routing."""
    eff_gemm: float = EFF_GEMM
    eff_mem: float = EFF_MEM
    eff_attn: float = EFF_ATTN
    overhead_s: float = OVERHEAD_S
    gemm_p: float = GEMM_P
    eff_kv: float | None = None
    """Efficiency of KV-cache reads (None: eff_mem, the weight-streaming efficiency)."""
    seq_overhead_s: float = 0.0
    prompt_overhead_s: float = 0.0
    layer_overhead_s: float = 0.0
    comm_overhead_s: float = 0.0
    attn_masked_share: float = 0.0
    mixed_overhead_s: float = 0.0
    _k: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _a2a: tuple[AllToAllFit, float, int] | None = field(init=False, repr=False, compare=False)
    _reads: Callable[[int], float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Fold the GPU and model into per-unit seconds once; iteration() runs per simulator step."""
        if self.ep > 1 and not self.model.is_moe:
            raise ValueError(f"ep={self.ep} needs a mixture-of-experts model; {self.model.name} is dense")
        c = self.model.work_coeffs(self.tp, self.ep, self.expert_skew)
        g = self.gpu
        bw = g.hbm_bytes_s * self.eff_mem
        gemm = g.peak_flops * self.eff_gemm
        kv_bw = g.hbm_bytes_s * (self.eff_mem if self.eff_kv is None else self.eff_kv)
        ar_wire = 0.0
        if c.allreduce_calls:
            ar_wire = 2.0 * (self.tp - 1) / self.tp * c.allreduce_bytes_per_token / (g.allreduce_bus_gb_s * 1e9)
        k = (
            c.flops_per_token / gemm,
            c.flops_per_logit / gemm,
            c.dense_weight_bytes / bw,
            self.model.layers * c.expert_bytes_per_layer / bw,
            c.attn_flops_per_pair / (g.peak_flops * self.eff_attn),
            c.kv_bytes_per_token / kv_bw,
            c.elementwise_bytes_per_token / bw + c.allreduce_calls * ar_wire,
            self.overhead_s + c.allreduce_calls * (g.allreduce_latency_s + self.comm_overhead_s)
            + self.model.layers * self.layer_overhead_s,
            self.seq_overhead_s,
            c.attn_flops_per_pair / (g.peak_flops * self.eff_attn) * self.attn_masked_share,
            self.mixed_overhead_s,
        )
        object.__setattr__(self, "_k", k)
        a2a = None
        if c.alltoall_calls:
            a2a = (alltoall_fit(g, self.ep), c.alltoall_bytes_per_token, c.alltoall_calls)
        object.__setattr__(self, "_a2a", a2a)
        object.__setattr__(self, "_reads", self.model.expert_reads(self.ep, self.expert_skew))

    def experts_read(self, tokens: int) -> float:
        """Distinct experts per layer whose weights the (busiest) rank reads for `tokens` tokens."""
        return self._reads(tokens)

    def comm_s(self, tokens: int) -> float:
        """MoE dispatch + combine all-to-all time of one iteration: clock- and cap-independent."""
        if self._a2a is None or tokens <= 0:
            return 0.0
        fit, per_token, calls = self._a2a
        return calls * fit.time_s(per_token * tokens)

    def iteration(self, shape: BatchShape, clock_mhz: float) -> IterCost:
        tokens = shape.prefill_tokens + shape.decode_seqs
        if tokens == 0:
            return IterCost(0.0, 0.0, 0.0)
        t_tok, t_logit, t_dense, t_expert, t_pair, t_kv, t_elem, t_fixed, t_seq, t_masked, t_mixed = self._k
        inv_s = self.gpu.clock_max_mhz / clock_mhz
        lin_c = (t_tok * tokens + t_logit * (shape.prefill_seqs + shape.decode_seqs)) * inv_s
        lin_m = t_dense + (t_expert * self._reads(tokens) if t_expert else 0.0)
        attn_c = t_pair * (shape.prefill_attn_pairs + shape.decode_ctx) * inv_s
        if t_masked:
            attn_c += t_masked * shape.prefill_masked_pairs * inv_s
        attn_m = t_kv * (shape.decode_ctx + shape.prefill_ctx + tokens)
        p = self.gemm_p
        lin = (lin_c**p + lin_m**p) ** (1.0 / p)
        elem = t_elem * tokens
        t = lin + (attn_c if attn_c > attn_m else attn_m) + elem + t_fixed
        if t_seq:
            t += t_seq * (shape.prefill_seqs + shape.decode_seqs)
        if self.prompt_overhead_s:
            t += self.prompt_overhead_s * shape.prefill_seqs
        if t_mixed and shape.prefill_tokens and shape.decode_seqs:
            t += t_mixed
        if self._a2a is not None:
            fit, per_token, calls = self._a2a
            t += calls * fit.time_s(per_token * tokens)
        return IterCost(t, lin_c + attn_c, lin_m + attn_m + elem)

    def decode_coeffs(self, seqs: int, clock_mhz: float) -> tuple[float, float]:
        base = self.iteration(BatchShape(decode_seqs=seqs), clock_mhz).time_s
        inv_s = self.gpu.clock_max_mhz / clock_mhz
        t_pair, t_kv = self._k[4], self._k[5]
        return base, max(t_pair * inv_s, t_kv)
