"""Invariants that must hold in every simulated run."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wattserve.catalog import get_gpu, get_model
from wattserve.catalog.models import BatchShape
from wattserve.metrics.power_series import cluster_power, integrate
from wattserve.perf import RooflineLatencyModel
from wattserve.results.records import COMPLETED, FAILED, PENDING
from wattserve.schema.cluster import ClusterConfig, EngineConfig
from wattserve.sim.cluster import Cluster
from wattserve.workload import LengthDist, SyntheticSpec, generate

from simutil import run_sim

scenarios = st.fixed_dictionaries({
    "colocated": st.booleans(),
    "tp": st.sampled_from([1, 2]),
    "cap": st.one_of(st.none(), st.floats(250, 700)),
    "rate": st.floats(2, 60),
    "mem_util": st.sampled_from([0.9, 0.3]),
    "budget": st.sampled_from([256, 2048]),
    "router": st.sampled_from(["round_robin", "least_loaded"]),
    "seed": st.integers(0, 10_000),
})


def build(p: dict) -> ClusterConfig:
    eng = EngineConfig(max_seqs=64, colocated_token_budget=p["budget"], prefill_token_budget=max(p["budget"], 4096),
                       mem_util=p["mem_util"])
    if p["colocated"]:
        return ClusterConfig(tp=p["tp"], prefill=0, decode=0, colocated=2, power_cap_w=p["cap"], engine=eng,
                           router=p["router"])
    return ClusterConfig(tp=p["tp"], prefill=1, decode=1, power_cap_w=p["cap"], engine=eng, router=p["router"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios)
def test_invariants_hold(p: dict) -> None:
    spec = build(p)
    res = run_sim(spec, rate=p["rate"], n=150, seed=p["seed"])
    r = res.records
    # every request finishes or is reported failed
    assert not np.any(r.status == PENDING)
    assert np.all((r.status == COMPLETED) | (r.status == FAILED))
    done = r.status == COMPLETED
    assert np.all(r.finish[done] >= r.arrival[done])
    assert np.all(r.ttft[done] >= 0) and np.all(r.e2el[done] >= r.ttft[done] - 1e-12)
    # energy equals the integral of the reported power
    t, w = cluster_power(res.gpus)
    assert sum(g.energy_j for g in res.gpus) == pytest.approx(integrate(t, w, res.end_s), rel=1e-9)
    # the KV cache never goes over capacity
    for inst in res.instances:
        assert inst.kv_peak_blocks <= inst.kv_blocks
    # no GPU draws more than its (static, settled from t=0) cap
    for g in res.gpus:
        assert max(g.watts) <= g.cap_w + 1e-6
    # TTFT is at least the prefill compute time of the prompt alone at full clock
    lat = RooflineLatencyModel(get_gpu(spec.gpu), get_model(spec.model), spec.tp)
    for i in np.flatnonzero(done)[:60]:
        alone = lat.iteration(BatchShape.prefill(int(r.prompt[i])), get_gpu(spec.gpu).clock_max_mhz).time_s
        assert r.ttft[i] >= alone * (1 - 1e-9)


def test_requests_too_large_for_kv_are_reported_failed() -> None:
    spec = ClusterConfig(prefill=0, decode=0, colocated=1, engine=EngineConfig(mem_util=0.3))
    res = run_sim(spec, rate=5, n=40, prompt=LengthDist("fixed", value=400_000), output=LengthDist("fixed", value=5))
    assert np.all(res.records.status == FAILED)
    assert set(res.records.fail_reason.values()) == {"kv_capacity"}


def test_small_kv_forces_preemption_and_all_finish() -> None:
    spec = ClusterConfig(prefill=0, decode=0, colocated=1, engine=EngineConfig(mem_util=0.3, max_seqs=256))
    res = run_sim(spec, rate=50, n=400, prompt=LengthDist("fixed", value=2000), output=LengthDist("fixed", value=600))
    inst = res.instances[0]
    assert inst.preemptions > 0
    assert np.all(res.records.status == COMPLETED)
    assert inst.kv_peak_blocks <= inst.kv_blocks
    assert int(res.records.preemptions.sum()) == inst.preemptions


def test_cap_change_holds_once_settled() -> None:
    wl = generate(SyntheticSpec(rate=30, num_requests=3000, duration_s=None, prompt=LengthDist("fixed", value=3000),
                                output=LengthDist("fixed", value=300)), seed=1)
    c = Cluster(ClusterConfig(prefill=1, decode=1), wl)
    settle = {}

    def lower(_: object) -> None:
        for g in c.gpus:
            settle[g.index] = c.set_power_cap(g.index, 300.0, settle_s=0.4)

    c.loop.at(20.0, lower)
    res = c.run()
    for g in res.gpus:
        times, watts = np.frombuffer(g.times), np.frombuffer(g.watts)
        before = watts[times < 20.0]
        after = watts[times >= settle[g.index]]
        assert before.max() > 300.0
        assert after.max() <= 300.0 + 1e-6
        assert g.cap_w == 300.0
    assert np.all(res.records.status == COMPLETED)


def test_out_of_range_cap_is_refused() -> None:
    c = Cluster(ClusterConfig(), generate(SyntheticSpec(rate=1, num_requests=2, duration_s=None,
                                                      prompt=LengthDist("fixed", value=10),
                                                      output=LengthDist("fixed", value=10)), 0))
    from wattserve.errors import UsageError

    with pytest.raises(UsageError, match=r"\[200, 700\] W"):
        c.set_power_cap(0, 150.0)
    with pytest.raises(UsageError, match="MHz"):
        c.set_clock(0, 5000)


def test_lower_cap_slows_prefill_more_than_decode() -> None:
    kw = dict(rate=4, n=200, prompt=LengthDist("fixed", value=4000), output=LengthDist("fixed", value=200))
    base = run_sim(ClusterConfig(prefill=1, decode=1), **kw)
    capped = run_sim(ClusterConfig(prefill=1, decode=1, power_cap_w=350), **kw)
    ttft = np.nanmedian(capped.records.ttft) / np.nanmedian(base.records.ttft)
    tpot = np.nanmedian(capped.records.tpot) / np.nanmedian(base.records.tpot)
    assert 1.15 < ttft < 1.5
    assert tpot < 1.08
    e_base = sum(g.energy_j for g in base.gpus)
    e_cap = sum(g.energy_j for g in capped.gpus)
    assert e_cap < e_base
