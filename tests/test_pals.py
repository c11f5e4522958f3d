"""PALS (arXiv 2605.21427): the feed-forward plan over a fitted table, the PI trim with its limits,
joint cap + batch actuation through the BudgetGuard, and a short pals-moe comparison."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattserve.control.pals import PalsController, plan
from wattserve.seam import ClusterState, GpuState, InstanceState, SetBatchLimit, SetPowerCap
from wattserve.seam.operating_table import FORMAT, OperatingTable

CAPS = (100.0, 200.0, 300.0, 400.0)
BATCHES = (8, 64)
TABLE = OperatingTable(
    "a100", "m", 4, 1, CAPS, BATCHES,
    tok_s=((200.0, 1000.0), (300.0, 1900.0), (320.0, 2200.0), (330.0, 2300.0)),
    power_w=((100.0, 100.0), (180.0, 200.0), (230.0, 280.0), (250.0, 330.0)))
"""Per instance tok/s and per GPU W: throughput saturates with the cap, as memory-bound decode does."""


def state(t: float, budget: float, target: float | None, tokens: int = 0, caps: float = 400.0,
          max_seqs: int = 256) -> ClusterState:
    gpus = tuple(GpuState(g, g // 4, caps, caps, 100.0, 400.0, 1410, 1410, None, caps, 0.0, False) for g in range(8))
    insts = tuple(InstanceState(i, "colocated", None, tuple(range(4 * i, 4 * i + 4)), 0, 0, 0, 64, 0.5, max_seqs,
                                None, None, 0.0, 0, tokens // 2, 0) for i in range(2))
    return ClusterState(t, budget, None, None, insts, gpus, target)


def test_plan_picks_best_tokens_per_joule_that_meets_the_target() -> None:
    p = plan(TABLE, 3000.0, 400.0, instances=2, tp=4, margin=0.05)
    assert (p.cap_w, p.batch) == (200.0, 64)
    assert p.tok_s * 2 >= 3000 * 1.05


def test_plan_under_an_unreachable_target_takes_the_most_throughput_the_budget_share_allows() -> None:
    p = plan(TABLE, 10_000.0, 250.0, instances=2, tp=4, margin=0.05)
    assert (p.cap_w, p.batch) == (250.0, 64)
    assert p.tok_s == pytest.approx(2050.0)


def test_batch_only_keeps_the_cap_at_the_budget_share_and_sizes_the_batch_to_the_target() -> None:
    low = plan(TABLE, 500.0, 400.0, instances=2, tp=4, margin=0.05, fixed_cap=True)
    high = plan(TABLE, 3000.0, 400.0, instances=2, tp=4, margin=0.05, fixed_cap=True)
    assert (low.cap_w, low.batch) == (400.0, 8)
    assert (high.cap_w, high.batch) == (400.0, 64)


@settings(max_examples=200, deadline=None)
@given(target=st.one_of(st.none(), st.floats(1.0, 20_000.0)), share=st.floats(100.0, 500.0))
def test_a_plan_never_asks_for_a_cap_above_the_budget_share(target: float | None, share: float) -> None:
    p = plan(TABLE, target, share, instances=2, tp=4, margin=0.05)
    assert p.cap_w <= max(share, CAPS[0]) + 1e-9
    assert p.batch in BATCHES


def test_the_pi_trim_moves_at_most_15_w_per_period_and_stops_integrating_at_the_budget_share() -> None:
    c = PalsController(table=TABLE)
    acts = c.start(state(0.0, 3200.0, 3000.0))
    caps = {a.watts for a in acts if isinstance(a, SetPowerCap)}
    assert caps == {200.0}
    assert {a.max_seqs for a in acts if isinstance(a, SetBatchLimit)} == {64}
    last, tokens = 200.0, 0
    for k in range(1, 40):
        tokens += 1500
        acts = c.decide(state(float(k), 3200.0, 3000.0, tokens=tokens, caps=last, max_seqs=64))
        now = {a.watts for a in acts if isinstance(a, SetPowerCap)} or {last}
        (cap,) = now
        assert abs(cap - last) <= 15.0 + 1e-9
        assert cap <= 400.0
        last = cap
    assert last == 400.0
    pinned = c._integral
    c.decide(state(40.0, 3200.0, 3000.0, tokens=tokens + 1500, caps=last, max_seqs=64))
    assert c._integral == pinned, "anti-windup: no integration while pinned at the top"


def test_a_budget_step_replans_at_once_and_resets_the_integral() -> None:
    c = PalsController(table=TABLE)
    c.start(state(0.0, 3200.0, 3000.0))
    for k in range(1, 10):
        c.decide(state(float(k), 3200.0, 3000.0, tokens=1500 * k, caps=200.0, max_seqs=64))
    acts = c.decide(state(10.0, 1200.0, 3000.0, tokens=15_000, caps=200.0, max_seqs=64))
    assert {a.watts for a in acts if isinstance(a, SetPowerCap)} == {150.0}
    assert c._integral == 0.0


def test_from_models_reads_a_fit_document_and_names_what_it_has() -> None:
    g = {"gpu": "a100", "model": "m", "tp": 4, "ep": 1, "caps_w": list(CAPS), "batches": list(BATCHES),
         "tok_s": [list(r) for r in TABLE.tok_s], "power_w": [list(r) for r in TABLE.power_w]}
    assert OperatingTable.from_models({"format": FORMAT, "groups": [g]}, "a100", "m", 4) == TABLE
    with pytest.raises(KeyError, match="a100/m/tp4/ep1"):
        OperatingTable.from_models({"format": FORMAT, "groups": [g]}, "h100", "m", 4)
    assert TABLE.at(250.0, 64).tok_s == pytest.approx(2050.0)


def test_a_batch_raise_waits_for_the_caps_it_needs() -> None:
    """pals submits cap raises and the batch raise together; the guard applies the batch limit only
    once the raised caps are in force (0.3 s in the simulator)."""
    from wattserve.control import BudgetGuard, ControlLoop
    from wattserve.experiments.backlog import backlog_workload
    from wattserve.schema.cluster import ClusterConfig, EngineConfig
    from wattserve.seam import ActuationLog, BudgetSignal, StepSignal
    from wattserve.sim.backend import SimBackend
    from wattserve.sim.cluster import Cluster

    cfg = ClusterConfig(gpu="a100", model="mixtral-8x7b", tp=4, prefill=0, decode=0, colocated=2,
                        power_cap_w=100.0, engine=EngineConfig(max_seqs=8))
    cluster = Cluster(cfg, backlog_workload(20.0, 10.0))
    budget = BudgetSignal.constant(3200.0)
    backend = SimBackend(cluster, budget, None, None, target=StepSignal.constant(3000.0))
    log = ActuationLog()
    guard = BudgetGuard(backend, budget, log)
    table = replace(TABLE, model="mixtral-8x7b")
    ControlLoop(backend, guard, [PalsController(table=table)]).start()
    cluster.run(until=5.0)
    batch = [e for e in log.entries if e.kind == "batchlimit"]
    caps = [e for e in log.entries if e.kind == "cap" and e.status == "applied"]
    assert batch[0].status == "deferred"
    applied = [e for e in batch if e.status == "applied"]
    assert applied and applied[0].time_s >= max(e.effective_s for e in caps[:8]) - 1e-9
    assert cluster.instances[0].max_seqs == 64


def test_pals_moe_short_run_holds_the_budget_and_beats_tdp_on_tokens_per_joule() -> None:
    """One deployment, a 150 s schedule: every policy holds the budget, pals spends less energy per
    token than tdp and violates QoS no more often than static-cap, and every result field is there."""
    from wattserve.experiments.pals_moe import PalsScenario, run_pals_compare

    sc = PalsScenario(duration_s=150.0, cut=(60.0, 100.0, 0.6),
                      target=((0.0, 0.5), (40.0, 0.95), (60.0, 1.0), (100.0, 0.95), (120.0, 0.5)))
    res = run_pals_compare(sc, list(sc.policies), ["h100-mixtral-8x7b"], seed=0, jobs=1)
    runs = {r["policy"]: r for r in res["runs"]}
    for r in runs.values():
        for key in ("policy", "workload", "model", "gpu", "output_toks_per_joule", "qos_violations", "qos_windows",
                    "budget_breaches", "budget_gap_mean_w", "max_sum_caps_w"):
            assert key in r
        assert r["budget_breaches"] == 0
        assert r["max_sum_caps_w"] <= 5600.0 + 1e-6
    assert runs["pals"]["output_toks_per_joule"] > runs["tdp"]["output_toks_per_joule"]
    assert runs["pals"]["qos_violations"] <= runs["static-cap"]["qos_violations"]
    assert runs["static-cap"]["qos_violations"] > 0
    assert runs["pals"]["budget_gap_cut_frac"] < 0.1
