"""BiScale tier 2 (per-iteration DVFS): the decode slack governor, the prefill MPC and their
combination, checked against the governors' own latency and power models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattserve.catalog.gpus import get_gpu
from wattserve.catalog.models import BatchShape, get_model
from wattserve.governors import BiScaleGovernor, DecodeSlackGovernor, PrefillMpcGovernor, make_governor
from wattserve.governors.decode_slack import decode_hold
from wattserve.governors.prefill_mpc import rollout
from wattserve.governors.static_view import StaticView
from wattserve.perf.latency import LatencyModel, RooflineLatencyModel
from wattserve.perf.power import UtilizationPowerModel
from wattserve.seam.governor import HOLD_UNTIL_CHANGE

H100 = get_gpu("h100")
LAT8 = RooflineLatencyModel(H100, get_model("llama-3.1-8b"), 1)
LAT70 = RooflineLatencyModel(H100, get_model("llama-3.1-70b"), 4)
POWER = UtilizationPowerModel.for_gpu(H100)


def View(phase: str, shape: BatchShape, **kw: Any) -> StaticView:  # noqa: N802 - reads as the view it builds
    """An H100 view (llama-3.1-8b latency unless `latency` is given, KV 10% used, budget 2,048)."""
    kw.setdefault("latency", LAT8)
    kw.setdefault("kv_usage", 0.1)
    return StaticView(phase, shape, H100, power=POWER, **kw)


def _decode_time(lat: LatencyModel, seqs: int, ctx: int, mhz: int) -> float:
    a, b = lat.decode_coeffs(seqs, mhz)
    return a + b * ctx


@settings(max_examples=60, deadline=None)
@given(seqs=st.integers(1, 256), per_seq=st.integers(1, 8000), slo_ms=st.floats(2.0, 200.0),
       big=st.booleans())
def test_decode_never_picks_an_infeasible_clock_when_a_feasible_one_exists(seqs, per_seq, slo_ms, big) -> None:
    lat = LAT70 if big else LAT8
    gov = DecodeSlackGovernor()
    slo = slo_ms / 1000
    view = View("decode", BatchShape(decode_seqs=seqs, decode_ctx=seqs * per_seq), slo_tpot_s=slo, latency=lat)
    d = gov.decide(view)
    target = gov.margin * slo
    feasible = [m for m in H100.clocks if _decode_time(lat, seqs, seqs * per_seq, m) <= target]
    if not feasible:
        assert d.clock_mhz == H100.clocks[-1] and d.hold_iters == 1
        return
    t = _decode_time(lat, seqs, seqs * per_seq, d.clock_mhz)
    assert t <= target
    rep = BatchShape(decode_seqs=seqs, decode_ctx=seqs * per_seq)
    p = POWER.busy_power(lat.iteration(rep, d.clock_mhz), d.clock_mhz)
    assert all(POWER.busy_power(lat.iteration(rep, m), m) >= p - 1e-6 for m in feasible)
    h = d.hold_iters
    if h != HOLD_UNTIL_CHANGE:
        assert _decode_time(lat, seqs, seqs * per_seq + (h - 1) * seqs, d.clock_mhz) <= target
        assert _decode_time(lat, seqs, seqs * per_seq + h * seqs, d.clock_mhz) > target


@settings(max_examples=200, deadline=None)
@given(alpha=st.floats(0.0, 0.05), beta=st.floats(0.0, 1e-6), ctx=st.integers(0, 10**6),
       seqs=st.integers(1, 256), target=st.floats(0.001, 0.1))
def test_decode_hold_is_exact(alpha, beta, ctx, seqs, target) -> None:
    h = decode_hold(alpha, beta, ctx, seqs, target)
    assert h >= 1
    if h == HOLD_UNTIL_CHANGE:
        assert beta <= 0.0 or (target - alpha) / beta - ctx >= (HOLD_UNTIL_CHANGE - 2) * seqs
        return
    if alpha + beta * ctx <= target:
        assert alpha + beta * (ctx + (h - 1) * seqs) <= target
    assert alpha + beta * (ctx + h * seqs) > target


def test_decode_without_slo_runs_at_the_base_clock_and_defers_other_phases() -> None:
    shape = BatchShape(decode_seqs=8, decode_ctx=8000)
    assert DecodeSlackGovernor(base_mhz=1500).decide(View("decode", shape)).clock_mhz == 1500
    assert DecodeSlackGovernor().decide(View("decode", shape)).clock_mhz is None
    assert DecodeSlackGovernor().decide(View("prefill", shape, slo_tpot_s=0.05)).clock_mhz is None


queues = st.lists(st.tuples(st.floats(0.0, 2.0), st.integers(100, 8000)), min_size=1, max_size=64)


def _plan_ok(view: StaticView, gov: PrefillMpcGovernor, clocks: Sequence[int]) -> bool:
    shapes, oldest = rollout(view.shape, sorted(view.queue), view.prefill_token_budget, gov.horizon)
    t = view.now_s
    for s, a, c in zip(shapes, oldest, clocks, strict=False):
        t += view.latency.iteration(s, c).time_s
        if t > a + view.slo_ttft_s * gov.slo_margin:
            return False
    return True


@settings(max_examples=60, deadline=None)
@given(q=queues, slo=st.floats(0.05, 10.0), now=st.floats(0.0, 3.0), budget=st.sampled_from([512, 2048, 8192]),
       big=st.booleans(), start=st.sampled_from([None, 900, 1500]))
def test_mpc_never_plans_a_ttft_miss_when_the_max_clock_plan_meets_them(q, slo, now, budget, big, start) -> None:
    queue = sorted(q)
    lat = LAT70 if big else LAT8
    first_n = min(budget, queue[0][1])
    first = BatchShape(prefill_tokens=first_n, prefill_seqs=int(first_n == queue[0][1]),
                       prefill_attn_pairs=first_n * (first_n + 1) / 2)
    rest = queue[1:] if first_n == queue[0][1] else [(queue[0][0], queue[0][1] - first_n)] + queue[1:]
    view = View("prefill", first, slo_ttft_s=slo, now_s=max(now, queue[-1][0]), queue=rest,
                prefill_token_budget=budget, latency=lat)
    gov = PrefillMpcGovernor(base_mhz=start)
    plan = gov.plan(view)
    assert plan is not None
    top = H100.clocks[-1]
    if _plan_ok(view, gov, [top] * gov.horizon):
        assert plan.feasible and _plan_ok(view, gov, plan.clocks)
    else:
        assert plan.clocks[0] == top
    assert gov.decide(view).clock_mhz == plan.clocks[0]


def test_mpc_lowers_the_clock_with_slack_floors_at_base_with_a_queue_and_guards_go_to_max() -> None:
    shape = BatchShape(prefill_tokens=2048, prefill_seqs=1, prefill_attn_pairs=2048 * 2049 / 2)
    view = View("prefill", shape, slo_ttft_s=5.0, queue=[(0.0, 1000)])
    top = H100.clocks[-1]
    assert PrefillMpcGovernor().decide(view).clock_mhz == top
    assert PrefillMpcGovernor(base_mhz=1200).decide(view).clock_mhz == 1200
    assert PrefillMpcGovernor().decide(View("prefill", shape, slo_ttft_s=5.0)).clock_mhz < top
    assert PrefillMpcGovernor().decide(View("prefill", shape, slo_ttft_s=5.0, kv_usage=0.8)).clock_mhz == top
    gov = PrefillMpcGovernor(base_mhz=1200)
    busy = View("prefill", shape, slo_ttft_s=5.0, queue=[(0.0, 3000)] * 8)
    first = gov.decide(busy)
    assert first.clock_mhz < top
    busy.now_s = 10.0
    assert gov.decide(busy).clock_mhz == top
    busy.now_s, busy.queue = 10.0 + 1e-4, [(10.0, 3000)] * 8
    assert gov.decide(busy).clock_mhz < top


def test_mpc_without_slo_runs_at_the_base_clock() -> None:
    shape = BatchShape(prefill_tokens=512, prefill_seqs=1, prefill_attn_pairs=512 * 513 / 2)
    assert PrefillMpcGovernor(base_mhz=1200).decide(View("prefill", shape)).clock_mhz == 1200


def test_biscale_dispatches_by_phase_and_takes_the_higher_clock_on_mixed_steps() -> None:
    gov = make_governor("biscale", prefill_base_mhz=1200, decode_base_mhz=1000)
    assert isinstance(gov, BiScaleGovernor)
    dec = BatchShape(decode_seqs=4, decode_ctx=4000)
    pre = BatchShape(prefill_tokens=512, prefill_seqs=1, prefill_attn_pairs=512 * 513 / 2)
    assert gov.decide(View("decode", dec)).clock_mhz == 1000
    assert gov.decide(View("prefill", pre)).clock_mhz == 1200
    mixed = BatchShape(prefill_tokens=512, prefill_seqs=1, prefill_attn_pairs=512 * 513 / 2,
                       decode_seqs=4, decode_ctx=4000)
    assert gov.decide(View("mixed", mixed)).clock_mhz == 1200


@pytest.mark.parametrize("colocated", [False, True])
def test_closed_form_runs_match_stepping_with_biscale(colocated: bool) -> None:
    from wattserve.schema.cluster import ClusterConfig, EngineConfig
    from wattserve.sim.cluster import Cluster
    from wattserve.workload import LengthDist, SyntheticSpec, generate

    wl = generate(SyntheticSpec(rate=12, num_requests=200, duration_s=None,
                                prompt=LengthDist("uniform", low=50, high=3000),
                                output=LengthDist("uniform", low=1, high=400)), 5)
    eng = EngineConfig(max_seqs=32, colocated_token_budget=512)
    base = dict(prefill=0, decode=0, colocated=2) if colocated else dict(prefill=1, decode=2)
    slo = (1.0, 0.03)
    table = Cluster(ClusterConfig(engine=eng, **base), wl, governor=BiScaleGovernor, slo_s=slo).run()
    step = Cluster(ClusterConfig(engine=eng, max_run_iters=1, **base), wl, governor=BiScaleGovernor,
                   slo_s=slo).run()
    assert table.events < step.events
    np.testing.assert_allclose(table.records.finish, step.records.finish, rtol=1e-9)
    np.testing.assert_allclose(table.records.ttft, step.records.ttft, rtol=1e-9)
    clocks = np.concatenate([g.clock_values for g in table.gpus])
    assert clocks.min() < H100.clocks[-1]


def test_biscale_lowers_clocks_in_the_runtime_worker() -> None:
    pytest.importorskip("torch")
    from wattserve.runtime.engine.engine import EngineArgs
    from wattserve.runtime.engine.sequence import SamplingParams
    from wattserve.runtime.worker import Worker, WorkerSpec

    w = Worker(WorkerSpec(0, "colocated", EngineArgs(model="tiny", seed=1), governor="biscale",
                          slo_ttft_s=2.0, slo_tpot_s=0.05))
    assert isinstance(w.engine.governor, BiScaleGovernor)
    greedy = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    for i in range(3):
        w.engine.add(f"r{i}", [1, 2, 3, 4, 5], greedy)
    seen = []
    for _ in range(6):
        w.engine.step()
        seen.append(w.stats()["governor_clock_mhz"])
    assert any(c is not None and c < H100.clocks[-1] for c in seen)
    w.power.close()


def test_serve_governor_biscale_lowers_the_modelled_clock_of_a_decode_worker() -> None:
    pytest.importorskip("torch")
    import re
    import time
    import urllib.request

    from serverutil import post, start_server

    srv = start_server("--prefill", "1", "--decode", "1", "--governor", "biscale", "--slo-tpot-ms", "200",
                       "--power-backend", "modelled")
    clocks: dict[str, float] = {}
    text = ""
    try:
        for i in range(4):
            code, body = post(srv.url, "/v1/completions", {"model": "tiny", "prompt": f"hello {i}", "max_tokens": 24,
                                                          "temperature": 0, "ignore_eos": True})
            assert code == 200, body
        deadline = time.time() + 15
        while time.time() < deadline:
            # workers report every 250 ms; a fast machine may finish before the first decode report
            text = urllib.request.urlopen(srv.url + "/metrics", timeout=30).read().decode()
            clocks = {m.group(1): float(m.group(2)) for m in
                      re.finditer(r'wattserve:gpu_sm_clock_mhz\{[^}]*gpu="(\d+)"[^}]*\} ([0-9.]+)', text)}
            if clocks and min(clocks.values()) < H100.clocks[-1]:
                break
            time.sleep(0.3)
    finally:
        srv.stop()
    assert clocks, text[:2000]
    assert min(clocks.values()) < H100.clocks[-1]


def test_serve_placement_window_recommends_a_tier1_placement_on_metrics_and_in_the_log() -> None:
    pytest.importorskip("torch")
    import re
    import time
    import urllib.request

    from serverutil import post, start_server

    srv = start_server("--prefill", "1", "--decode", "1", "--governor", "biscale", "--placement-window", "2")
    try:
        for i in range(6):
            code, body = post(srv.url, "/v1/completions", {"model": "tiny", "prompt": f"hi {i}", "max_tokens": 8,
                                                          "temperature": 0})
            assert code == 200, body
        deadline = time.time() + 60
        text = ""
        while time.time() < deadline and "wattserve:recommended_placement{" not in text:
            time.sleep(1)
            text = urllib.request.urlopen(srv.url + "/metrics", timeout=30).read().decode()
    finally:
        out = srv.stop()
    got = {(m.group(1), m.group(2)): float(m.group(3)) for m in re.finditer(
        r'wattserve:recommended_placement\{field="(\w+)",model_name="tiny",phase="(\w+)"\} ([0-9.e+]+)', text)}
    assert got[("instances", "prefill")] >= 1 and got[("instances", "decode")] >= 1, text[-3000:]
    assert got[("tp", "prefill")] * got[("instances", "prefill")] + got[("tp", "decode")] * got[("instances", "decode")] <= 2
    assert "BiScale tier 1 recommends" in out and "not applied" in out


def test_static_view_implements_every_member_of_the_step_view_protocol() -> None:
    from wattserve.seam.governor import StepView

    members = {n for n in vars(StepView) if not n.startswith("_")} | set(StepView.__annotations__)
    view = View("decode", BatchShape(decode_seqs=2, decode_ctx=100))
    missing = sorted(m for m in members if not hasattr(view, m))
    assert members and not missing
