"""BiScale tier 1: the placement (instances and TP per phase) and base clock per phase for a window.

BiScale ("BiScale: Energy-Efficient Disaggregated LLM Serving via Phase-Aware Placement and DVFS",
Basit, Liu, Kong, Hu, arXiv 2602.18755; DualScale in v3) re-plans every few minutes from the last
window's arrival rate and lengths, choosing the placement and base frequencies that minimise energy
while the SLO attainment target holds. As in DistServe ("DistServe: Disaggregating Prefill and
Decoding for Goodput-optimized LLM Serving", arXiv 2401.09670) and BiScale's tier 1, a candidate is
judged by simulating it on the window's workload; the models prune first.

Search space, for G GPUs of a node size, a model and a clock table: per phase, TP in {1, 2, 4, 8}
where the weights leave room for KV, instance counts 1..G/TP, and `levels` base clocks spread over
the table (always the maximum). That is at most 4 x G x levels options per phase (16 GPUs, 8 levels:
<= 512) and their pairs within G GPUs (~10^5), too many to simulate. Each phase's options are priced
by the latency and power models in closed form (microseconds each):
- prefill, as an M/G/1 queue per instance (Pollaczek-Khinchine): utilisation >= `rho_max` or a
  predicted mean TTFT beyond the SLO drops the option;
- decode, by Little's law: the batch an instance holds is its arrival rate x output length x TPOT,
  solved as a fixed point with the latency model; a batch over max_num_seqs, KV beyond the instance's
  capacity, or a predicted TPOT beyond `tpot_margin` x the SLO drops it;
- energy over the window: busy power x busy time + idle power x idle time, for every GPU powered.
The surviving pairs are ranked by predicted energy; the `placements` cheapest placements are
simulated, each at its cheapest clock pair and at one level higher on both phases (robustness
against what the closed form misses: bursts, chunking, hand-off). The least-energy simulated
candidate meeting `attainment` wins. When none does (a bursty trace the closed form underrates),
the same placements are retried two, four and all levels higher, then DistServe's candidates (below);
still none: the candidate with the highest attainment.

`distserve` (the baseline) searches placements at the maximum clock and takes, among those meeting
the target, the fewest GPUs: at a given rate, the placement with the highest goodput per GPU,
DistServe's objective. Ties go to the higher attainment.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from wattserve.catalog.gpus import GpuSpec, get_gpu
from wattserve.catalog.models import BatchShape, ModelSpec, get_model
from wattserve.governors.prefill_mpc import coarse_levels
from wattserve.perf.perf_profile import load_profile
from wattserve.schema.cluster import ClusterConfig
from wattserve.workload.workload import Workload


@dataclass(frozen=True)
class Placement:
    """One tier-1 decision. A clock of None runs that phase at the maximum (no lock, no base)."""

    prefill: int
    prefill_tp: int
    decode: int
    decode_tp: int
    prefill_mhz: int | None = None
    decode_mhz: int | None = None

    @property
    def gpus(self) -> int:
        return self.prefill * self.prefill_tp + self.decode * self.decode_tp

    def cluster(self, base: ClusterConfig, lock: bool) -> ClusterConfig:
        """`base` with this placement; with `lock`, the base clocks locked per phase (PlaceOnly)."""
        update: dict[str, Any] = {"prefill": self.prefill, "decode": self.decode, "colocated": 0,
                                  "prefill_tp": self.prefill_tp, "decode_tp": self.decode_tp}
        if lock:
            update |= {"prefill_clock_mhz": self.prefill_mhz, "decode_clock_mhz": self.decode_mhz}
        return base.model_copy(update=update)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"gpus": self.gpus}


@dataclass(frozen=True)
class PhaseOption:
    count: int
    tp: int
    mhz: int | None
    level: int
    energy_j: float


@dataclass(frozen=True)
class WindowStats:
    """What tier 1 knows of a window: its length, request rate and length samples."""

    span_s: float
    rate: float
    prompts: np.ndarray
    outputs: np.ndarray

    @classmethod
    def of(cls, wl: Workload, span_s: float, samples: int = 128) -> WindowStats:
        n = len(wl)
        if n == 0:
            return cls(span_s, 0.0, np.array([1.0]), np.array([1.0]))
        q = (np.arange(samples) + 0.5) / samples
        return cls(span_s, n / span_s, np.quantile(wl.prompt_tokens, q), np.quantile(wl.output_tokens, q))


@dataclass(frozen=True)
class SearchSpace:
    gpu: str
    model: str
    num_gpus: int
    gpus_per_node: int = 8
    levels: int = 8
    slo_ttft_s: float = 0.6
    slo_tpot_s: float = 0.1
    rho_max: float = 0.85
    tpot_margin: float = 0.9
    attainment: float = 0.95
    placements: int = 4
    max_seqs: int = 256
    mem_util: float = 0.9
    block_size: int = 16
    perf_profile: str = "default"

    def clocks(self, spec: GpuSpec) -> list[int | None]:
        table = coarse_levels(spec.clocks, self.levels, None)
        return [*table[:-1], None]

    def tps(self, spec: GpuSpec, model: ModelSpec) -> list[int]:
        return [tp for tp in (1, 2, 4, 8) if tp <= self.gpus_per_node and self.gpus_per_node % tp == 0
                and tp <= self.num_gpus
                and model.kv_capacity_tokens(spec.hbm_bytes, tp, self.mem_util) >= 64 * self.block_size]


def _prefill_shape(p: float) -> BatchShape:
    n = int(p)
    return BatchShape.prefill(n)


def prefill_options(sp: SearchSpace, st: WindowStats, max_clock_only: bool = False) -> list[PhaseOption]:
    spec, model, profile = get_gpu(sp.gpu), get_model(sp.model), load_profile(sp.perf_profile)
    power = profile.power_model(spec)
    clocks = [None] if max_clock_only else sp.clocks(spec)
    out = []
    for tp in sp.tps(spec, model):
        lat = profile.latency_model(spec, model, tp)
        shapes = [_prefill_shape(p) for p in st.prompts]
        for level, mhz in enumerate(clocks):
            f = spec.clocks[-1] if mhz is None else mhz
            costs = [lat.iteration(s, f) for s in shapes]
            t = np.array([c.time_s for c in costs])
            pw = np.array([power.busy_power(c, f) for c in costs])
            es, es2, ebusy = float(t.mean()), float((t * t).mean()), float((t * pw).mean())
            for n in range(1, sp.num_gpus // tp + 1):
                lam = st.rate / n
                rho = lam * es
                if rho >= sp.rho_max:
                    continue
                wait = lam * es2 / (2 * (1 - rho))
                if es + wait > sp.slo_ttft_s:
                    continue
                busy_s = st.rate * st.span_s * es
                energy = tp * (st.rate * st.span_s * ebusy + spec.idle_w * max(0.0, n * st.span_s - busy_s))
                out.append(PhaseOption(n, tp, mhz, level, energy))
    return out


def decode_options(sp: SearchSpace, st: WindowStats, max_clock_only: bool = False) -> list[PhaseOption]:
    spec, model, profile = get_gpu(sp.gpu), get_model(sp.model), load_profile(sp.perf_profile)
    power = profile.power_model(spec)
    clocks = [None] if max_clock_only else sp.clocks(spec)
    out_len = float(st.outputs.mean())
    ctx = float(st.prompts.mean() + st.outputs.mean() / 2)
    out = []
    for tp in sp.tps(spec, model):
        lat = profile.latency_model(spec, model, tp)
        kv = model.kv_capacity_tokens(spec.hbm_bytes, tp, sp.mem_util)
        for level, mhz in enumerate(clocks):
            f = spec.clocks[-1] if mhz is None else mhz
            for n in range(1, sp.num_gpus // tp + 1):
                lam = st.rate / n
                b, cost = 1.0, lat.iteration(BatchShape(decode_seqs=1, decode_ctx=int(ctx)), f)
                for _ in range(30):
                    b_new = max(1.0, lam * out_len * cost.time_s)
                    cost = lat.iteration(BatchShape(decode_seqs=math.ceil(b_new), decode_ctx=int(b_new * ctx)), f)
                    if abs(b_new - b) < 1e-3 * b:
                        b = b_new
                        break
                    b = b_new
                if b > sp.max_seqs or b * ctx > kv or cost.time_s > sp.tpot_margin * sp.slo_tpot_s:
                    continue
                busy = 1.0 - math.exp(-lam * out_len * cost.time_s)
                energy = n * tp * st.span_s * (busy * power.busy_power(cost, f) + (1 - busy) * spec.idle_w)
                out.append(PhaseOption(n, tp, mhz, level, energy))
    return out


def candidates(sp: SearchSpace, st: WindowStats, max_clock_only: bool = False, bump: int = 0
               ) -> tuple[list[Placement], int]:
    """The placements to simulate, and how many option pairs the models priced. `bump` raises
    every candidate's clocks by that many levels (a retry when none met the target)."""
    pre = prefill_options(sp, st, max_clock_only)
    dec = decode_options(sp, st, max_clock_only)
    best: dict[tuple[int, int, int, int], tuple[float, PhaseOption, PhaseOption]] = {}
    priced = 0
    for p in pre:
        for d in dec:
            if p.count * p.tp + d.count * d.tp > sp.num_gpus:
                continue
            priced += 1
            key = (p.count, p.tp, d.count, d.tp)
            e = p.energy_j + d.energy_j
            if key not in best or e < best[key][0]:
                best[key] = (e, p, d)
    if max_clock_only:
        ranked = sorted(best.items(), key=lambda kv: (kv[0][0] * kv[0][1] + kv[0][2] * kv[0][3], kv[1][0]))
        return [Placement(*key) for key, _ in ranked], priced
    ranked = sorted(best.items(), key=lambda kv: kv[1][0])[:sp.placements]
    spec = get_gpu(sp.gpu)
    clocks = sp.clocks(spec)
    top = len(clocks) - 1
    out: list[Placement] = []
    for key, (_, p, d) in ranked:
        for step in (bump, bump + 1):
            pl = Placement(*key, clocks[min(p.level + step, top)], clocks[min(d.level + step, top)])
            if pl not in out:
                out.append(pl)
    return out, priced


@dataclass(frozen=True)
class Evaluated:
    placement: Placement
    attainment: float
    energy_j: float


@dataclass(frozen=True)
class Decision:
    placement: Placement
    attainment: float
    energy_j: float
    priced: int
    simulated: int
    search_s: float

    def as_dict(self) -> dict[str, Any]:
        return self.placement.as_dict() | {"planned_attainment": self.attainment, "planned_energy_j": self.energy_j,
                                           "priced": self.priced, "simulated": self.simulated,
                                           "search_s": self.search_s}


Evaluate = Callable[[Iterable[Placement]], list[Evaluated]]


def _fewest_gpus(sp: SearchSpace, st: WindowStats, evaluate: Evaluate) -> list[Evaluated]:
    """Placements at the maximum clock in order of GPUs used, simulated a batch at a time until one
    meets the target (at most four batches)."""
    cands = candidates(sp, st, max_clock_only=True)[0]
    results: list[Evaluated] = []
    step = 2 * sp.placements
    for i in range(0, min(len(cands), 4 * step), step):
        results += evaluate(cands[i:i + step])
        if any(r.attainment >= sp.attainment for r in results):
            break
    return results


def choose(sp: SearchSpace, st: WindowStats, evaluate: Evaluate, objective: str = "energy") -> Decision:
    """Tier 1's decision for the next window: `objective` 'energy' (BiScale) or 'gpus' (DistServe,
    at the maximum clock). `evaluate` simulates candidates on the last window's workload."""
    started = time.perf_counter()
    cands, priced = candidates(sp, st, max_clock_only=objective == "gpus")
    tp = max(sp.tps(get_gpu(sp.gpu), get_model(sp.model)) or [1])
    half = max(1, sp.num_gpus // 2 // tp)
    fallback = [Placement(half, tp, max(1, sp.num_gpus // tp - half), tp)]
    if objective == "gpus":
        results = _fewest_gpus(sp, st, evaluate) or evaluate(fallback)
    else:
        results = evaluate(cands or fallback)
        for bump in (2, 4, sp.levels):
            if any(r.attainment >= sp.attainment for r in results):
                break
            seen = {r.placement for r in results}
            more = [c for c in candidates(sp, st, bump=bump)[0] if c not in seen]
            results += evaluate(more)
        if not any(r.attainment >= sp.attainment for r in results):
            results += _fewest_gpus(sp, st, evaluate)
    ok = [r for r in results if r.attainment >= sp.attainment]
    if ok and objective == "gpus":
        pick = min(ok, key=lambda r: (r.placement.gpus, -r.attainment, r.energy_j))
    elif ok:
        pick = min(ok, key=lambda r: r.energy_j)
    else:
        pick = max(results, key=lambda r: (r.attainment, -r.energy_j))
    return Decision(pick.placement, pick.attainment, pick.energy_j, priced, len(results),
                    time.perf_counter() - started)
