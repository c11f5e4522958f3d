"""RAPID-Serve (arXiv 2601.11822) in the simulator: the concurrent layout, the co-run latency model,
the Adaptive Resource Manager and SetComputeShare."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattserve.catalog.gpus import get_gpu
from wattserve.catalog.models import BatchShape, get_model
from wattserve.governors.rapid_serve import RapidServeGovernor, min_decode_share
from wattserve.governors.static_view import StaticView
from wattserve.perf.corun import INTERFERENCE, demand, shared_time
from wattserve.perf.latency import RooflineLatencyModel
from wattserve.perf.power import UtilizationPowerModel
from wattserve.results.records import COMPLETED
from wattserve.schema.cluster import ClusterConfig, EngineConfig
from wattserve.seam import ActuationRefused, BudgetSignal, SetComputeShare
from wattserve.sim.backend import SimBackend
from wattserve.sim.cluster import Cluster
from wattserve.workload import Workload

GPU = get_gpu("mi300x")
LAT = RooflineLatencyModel(GPU, get_model("llama-3.1-70b"), 8)


def _prefill(tokens: int) -> BatchShape:
    return BatchShape(prefill_tokens=tokens, prefill_seqs=1, prefill_attn_pairs=tokens * (tokens + 1) // 2)


def _decode(seqs: int, per_seq: int) -> BatchShape:
    return BatchShape(decode_seqs=seqs, decode_ctx=seqs * per_seq)


@settings(max_examples=60, deadline=None)
@given(seqs=st.integers(1, 256), per_seq=st.integers(64, 16384), tokens=st.integers(128, 20000),
       share_units=st.integers(1, 37))
def test_decode_beside_a_prefill_is_slower_than_alone_overallocated_or_on_a_share(seqs, per_seq, tokens,
                                                                                   share_units) -> None:
    dec = LAT.iteration(_decode(seqs, per_seq), GPU.clock_max_mhz)
    other = demand(LAT.iteration(_prefill(tokens), GPU.clock_max_mhz))
    alone = shared_time(dec, None, None, 0.0)
    assert alone == pytest.approx(dec.time_s)
    assert shared_time(dec, None, other, INTERFERENCE["decode"]) > alone
    share = share_units * 8 / GPU.compute_units
    assert shared_time(dec, share, other, INTERFERENCE["decode"]) > alone


@settings(max_examples=60, deadline=None)
@given(seqs=st.integers(1, 256), per_seq=st.integers(64, 8192), tokens=st.integers(512, 20000),
       slo_ms=st.floats(5.0, 200.0))
def test_min_share_is_the_smallest_step_that_meets_the_target(seqs, per_seq, tokens, slo_ms) -> None:
    target = slo_ms / 1e3
    share = min_decode_share(LAT, GPU, seqs, per_seq, tokens, target)
    dec = LAT.iteration(_decode(seqs, per_seq), GPU.clock_max_mhz)
    other = demand(LAT.iteration(_prefill(tokens), GPU.clock_max_mhz))
    itf = INTERFERENCE["decode"]
    if share is None:
        assert shared_time(dec, None, other, itf) <= target
        return
    units = round(share * GPU.compute_units)
    assert units % GPU.share_step == 0 and 0 < units < GPU.compute_units
    last = units == GPU.compute_units - GPU.share_step
    assert shared_time(dec, share, other, itf) <= target or last
    if units > GPU.share_step:
        assert shared_time(dec, (units - GPU.share_step) / GPU.compute_units, other, itf) > target


def _view(phase: str, shape: BatchShape, queue: list[tuple[float, int]], slo_tpot_s: float | None) -> StaticView:
    return StaticView(phase, shape, GPU, LAT, UtilizationPowerModel.for_gpu(GPU), queue=queue,
                      slo_tpot_s=slo_tpot_s, prefill_token_budget=8192)


def test_manager_overallocates_without_prefill_or_under_light_decode_and_splits_under_load() -> None:
    gov = RapidServeGovernor()
    heavy = _decode(256, 4096)
    assert gov.decide(_view("decode", heavy, [], 0.02)).decode_share is None
    assert gov.decide(_view("prefill", _prefill(8192), [(0.0, 8192)], 0.02)).decode_share is None
    assert gov.decide(_view("decode", _decode(1, 256), [(0.0, 8192)], 0.1)).decode_share is None
    dec = LAT.iteration(heavy, GPU.clock_max_mhz)
    over = shared_time(dec, None, demand(LAT.iteration(_prefill(8192), GPU.clock_max_mhz)), INTERFERENCE["decode"])
    between = (dec.time_s * 1.1 + over) / 2 / gov.margin
    split = gov.decide(_view("decode", heavy, [(0.0, 8192)], between)).decode_share
    assert split is not None and 0.0 < split < 1.0


def _decode_then_prefills(prefills: int, decodes: int = 64) -> Workload:
    """`decodes` short prompts with long outputs at t=0, then long prompts (one output token) every
    50 ms from t=0.5 s, so a decode batch runs while prefills come and go beside it."""
    arr = np.concatenate([np.zeros(decodes), 0.5 + 0.05 * np.arange(prefills)])
    prompt = np.concatenate([np.full(decodes, 256), np.full(prefills, 8192)]).astype(np.int64)
    out = np.concatenate([np.full(decodes, 600), np.ones(prefills)]).astype(np.int64)
    return Workload(arr, prompt, out, "decode-then-prefills")


def _decode_tpot_ms(governor: str, prefills: int, slo_tpot_ms: float, pin: float | None = None,
                    worst: bool = False) -> float:
    """Mean (or worst) TPOT of the decode requests, ms."""
    spec = ClusterConfig(gpu="mi300x", model="llama-3.1-70b", tp=8, prefill=0, decode=0, concurrent=1,
                         engine=EngineConfig(governor=governor))
    wl = _decode_then_prefills(prefills)
    cluster = Cluster(spec, wl, slo_s=(10.0, slo_tpot_ms / 1e3))
    if pin is not None:
        cluster.set_compute_share(0, "decode", pin)
    res = cluster.run()
    r = res.records
    dec = wl.output_tokens > 1
    assert (r.status[dec] == COMPLETED).all()
    return float((np.max if worst else np.mean)(r.tpot[dec]) * 1e3)


def test_decode_itl_rises_with_a_co_running_prefill_under_overallocation_and_the_manager_holds_the_slo() -> None:
    alone = _decode_tpot_ms("max-clock", 0, 100.0)
    beside = _decode_tpot_ms("max-clock", 8, 100.0)
    more = _decode_tpot_ms("max-clock", 40, 100.0)
    assert alone < beside < more
    slo = (alone + more) / 2
    assert more > slo
    assert _decode_tpot_ms("max-clock", 40, slo, worst=True) > slo
    assert _decode_tpot_ms("rapid-serve", 40, slo, worst=True) <= slo


def test_set_compute_share_works_on_a_concurrent_instance_and_is_refused_elsewhere() -> None:
    wl = _decode_then_prefills(20)
    conc = Cluster(ClusterConfig(gpu="mi300x", model="llama-3.1-70b", tp=8, prefill=0, decode=0, concurrent=1), wl)
    backend = SimBackend(conc, BudgetSignal.constant(6000.0), 1.0, 0.1)
    backend.apply(SetComputeShare(0, "decode", 0.25))
    assert conc.instances[0].corun.decode_share == pytest.approx(0.25)
    backend.apply(SetComputeShare(0, "prefill", 1.0))
    assert conc.instances[0].corun.decode_share is None
    with pytest.raises(ActuationRefused, match="fraction"):
        backend.apply(SetComputeShare(0, "decode", 0.0))
    with pytest.raises(ActuationRefused, match="phase"):
        backend.apply(SetComputeShare(0, "kv", 0.5))
    coloc = Cluster(ClusterConfig(gpu="mi300x", model="llama-3.1-70b", tp=8, prefill=0, decode=0, colocated=1), wl)
    with pytest.raises(ActuationRefused, match="concurrent"):
        SimBackend(coloc, BudgetSignal.constant(6000.0), 1.0, 0.1).apply(SetComputeShare(0, "decode", 0.5))


def test_a_pinned_small_decode_share_slows_decode_and_speeds_prefill() -> None:
    wide = _decode_tpot_ms("max-clock", 40, 100.0, pin=0.75)
    narrow = _decode_tpot_ms("max-clock", 40, 100.0, pin=0.2)
    assert narrow > wide


def test_concurrent_energy_splits_by_phase_and_sums_to_the_total() -> None:
    wl = _decode_then_prefills(30)
    res = Cluster(ClusterConfig(gpu="mi300x", model="llama-3.1-70b", tp=8, prefill=0, decode=0, concurrent=1),
                  wl).run()
    for g in res.gpus:
        assert g.prefill_energy_j > 0 and g.decode_energy_j > 0
        total = float(np.sum(np.diff(np.append(g.times, res.end_s)) * g.watts))
        assert g.prefill_energy_j + g.decode_energy_j + g.idle_energy_j == pytest.approx(total, rel=1e-9)
        assert g.watts.max() <= g.cap_w + 1e-9
