"""wattserve's planner (issue 15, in part): the load estimate and its shift detection, the closed-form
model's orderings, decisions that keep every cap plan inside the budget and move several instances
at once, and a simulated run that holds the budget and reports its planning time."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattserve.control.planner import Counters, PlannerController, estimate
from wattserve.experiments.build import SimRun, build_run
from wattserve.experiments.plan_sim import analytic_model
from wattserve.experiments.run_metrics import caps_sum_peak
from wattserve.experiments.scenarios import get_scenario
from wattserve.experiments.workloads import make_workload
from wattserve.results.sim_result import SimResult
from wattserve.seam import ClusterState, GpuState, InstanceState, Layout, LoadEstimate, SetPowerCap, SetRole

SC = get_scenario("rapid-mi300x")
CLUSTER = SC.scenario(replace(SC.arm("planner"), governor="max-clock")).cluster
"""The planner arm's cluster without its governor's target to set: the model's tests judge layouts
and load alone."""
MODEL = analytic_model(CLUSTER, 1.0, 0.04)


def _state(t: float, arrived_prefill_waiting: int, completed: int, prompt_tokens: int, output_tokens: int,
           prefill: int = 4, caps: tuple[float, float] = (600.0, 600.0), budget: float = 4800.0) -> ClusterState:
    insts, gpus = [], []
    for i in range(8):
        role = "prefill" if i < prefill else "decode"
        insts.append(InstanceState(
            iid=i, role=role, switching_to=None, gpus=(i,), waiting=arrived_prefill_waiting if i == 0 else 0,
            waiting_tokens=0, prefilling=0, running=0, kv_usage=0.0, max_seqs=256, ttft_p90_s=None, tpot_p90_s=None,
            oldest_wait_s=0.0, prompt_tokens=prompt_tokens if i == 0 else 0,
            output_tokens=output_tokens if i == prefill else 0, completed=completed if i == prefill else 0))
        cap = caps[0] if role == "prefill" else caps[1]
        gpus.append(GpuState(index=i, instance=i, cap_w=cap, cap_target_w=cap, cap_min_w=300.0, cap_max_w=750.0,
                             clock_mhz=2100, clock_max_mhz=2100, locked_clock_mhz=None, power_w=cap, energy_j=0.0,
                             throttled=False))
    return ClusterState(t, budget, 1.0, 0.04, tuple(insts), tuple(gpus))


def test_estimate_reads_rate_and_lengths_from_the_counters() -> None:
    est = estimate(Counters(0.0, 0, 0, 0, 0), Counters(10.0, 300, 300 * 8192, 290 * 128, 290), 100.0)
    assert est is not None
    assert est.rate_rps == 30.0 and est.prompt_tokens == 8192.0 and est.output_tokens == 128.0
    assert estimate(Counters(0.0, 5, 0, 0, 0), Counters(3.0, 5, 0, 0, 0), 100.0) is None


def test_a_phase_shift_is_planned_for_within_one_period() -> None:
    """Twenty seconds of long prompts, then one period of short ones: the estimate is the last period's."""
    p = PlannerController(model=MODEL, period_s=3.0, window_s=20.0)
    arrived = prompt = 0
    for t in range(0, 22, 3):
        p.history.append(Counters(float(t), arrived, prompt, 0.0, 0.0))
        arrived += 90
        prompt += 90 * 8192
    arrived -= 90
    prompt -= 90 * 8192
    now = Counters(24.0, arrived + 90, prompt + 90 * 500, 0.0, 0.0)
    p.history.append(now)
    load = p._load(now)
    assert load is not None and abs(load.prompt_tokens - 500.0) < 1.0


@settings(max_examples=30, deadline=None)
@given(st.floats(1.0, 60.0), st.floats(1.05, 2.0))
def test_the_closed_form_model_never_predicts_better_service_for_more_load(rate: float, more: float) -> None:
    lay = Layout(4, 600.0, 600.0)
    (lo,), (hi,) = (MODEL.predict(LoadEstimate(r, 4000.0, 200.0), [lay]) for r in (rate * more, rate))
    assert lo[0] <= hi[0] + 1e-12


def test_the_closed_form_model_gives_long_prompts_more_prefill_instances() -> None:
    load = LoadEstimate(38.0, 8192.0, 128.0)
    preds = MODEL.predict(load, [Layout(p, 600.0, (4800.0 - p * 600.0) / (8 - p)) for p in (2, 4, 6)])
    assert preds[0][0] <= preds[1][0] <= preds[2][0] and preds[2][0] > preds[0][0]


def test_a_decision_moves_several_instances_at_once_and_its_caps_fit_the_budget() -> None:
    p = PlannerController(model=MODEL, screen=MODEL, period_s=3.0)
    p.start(_state(0.0, 0, 0, 0, 0))
    p.history.append(Counters(0.0, 0, 0, 0, 0))
    actions = p.decide(_state(6.0, 10, 110, 120 * 8192, 110 * 128))
    roles = [a for a in actions if isinstance(a, SetRole)]
    caps = {a.gpu: a.watts for a in actions if isinstance(a, SetPowerCap)}
    assert len(roles) >= 2 and {a.role for a in roles} == {"prefill"}
    assert len(caps) == 8 and sum(caps.values()) <= 4800.0 + 1e-6
    assert all(300.0 - 1e-6 <= w <= 750.0 + 1e-6 for w in caps.values())
    assert p.decisions[-1]["prefill"] == 4 + len(roles) and p.planning_s


def planner_run(rate: float, per_phase: int, **planner: object) -> tuple[SimRun, SimResult, PlannerController]:
    """A sonnet-shift run of the planner arm of rapid-mi300x (`planner`: fields of the planner to
    change): the run, its result and its planner."""
    run = build_run(SC.scenario(SC.arm("planner"), 0), make_workload("sonnet-shift", rate, 0, per_phase=per_phase),
                    controller_params=planner)
    res = run.run()
    assert isinstance(run.controller, PlannerController)
    return run, res, run.controller


def test_a_simulated_planner_run_holds_the_budget_and_reports_its_planning() -> None:
    run, res, planner = planner_run(30.0, 200)
    assert caps_sum_peak(res) <= SC.budget_w + 1e-6
    assert run.guard is not None and run.guard.peak_committed_w <= SC.budget_w + 1e-6
    assert len(planner.planning_s) >= 3 and all(s > 0 for s in planner.planning_s)
    assert any(d["prompt_tokens"] > 4000 for d in planner.decisions)
    assert np.all(res.records.status == 1)


def test_the_simulated_model_prices_the_switch_from_the_layout_in_force() -> None:
    """A split that needs two instances to drain and reconfigure is judged from the layout in force,
    so under a heavy load of long prompts it scores below the same split simulated from scratch; a
    colocated layout, reached by instant switches, loses nothing by it."""
    from wattserve.experiments.plan_sim import SimPlanModel

    model = SimPlanModel(CLUSTER, 1.0, 0.04)
    load = LoadEstimate(36.8, 8192.0, 147.0, backlog=2)
    current, split, colocated = Layout(4, 600.0, 600.0), Layout(6, 675.0, 375.0), Layout.all_colocated(600.0)
    from_scratch = model.predict(load, [split, colocated])
    switched = model.predict(load, [split, colocated], current)
    assert switched[0][0] < from_scratch[0][0]
    assert switched[1][0] == pytest.approx(from_scratch[1][0], abs=0.02)


def test_before_any_load_the_planner_starts_every_instance_colocated_at_once() -> None:
    _, res, planner = planner_run(38.0, 100)
    first = [e for e in res.role_events if e[0] == 0.0]
    assert {e[2] for e in first[8:]} == {"colocated"} and len(first) == 16, "eight start roles, eight switches at 0"
    assert not [e for e in res.role_events if e[2] == "switching"]
    assert planner.decisions[0]["layout"] == "colocated"


def test_under_long_prompts_the_planner_moves_every_instance_to_colocated_at_once() -> None:
    _, res, planner = planner_run(38.0, 400, start_colocated=False)
    first = planner.decisions[0]
    assert first["layout"] == "colocated" and first["predicted_attainment"] > first["current_attainment"]
    switched = [e for e in res.role_events if 0 < e[0] <= first["time_s"] and e[2] == "colocated"]
    assert len(switched) == 8 and {e[0] for e in switched} == {first["time_s"]}, "all eight switch in one decision"
    assert not [e for e in res.role_events if e[2] == "switching"], "a switch into colocated drains nothing"
    assert caps_sum_peak(res) <= SC.budget_w + 1e-6


def test_with_service_equal_the_planner_moves_for_less_power_only() -> None:
    p = PlannerController(model=MODEL)
    judged = dict(enumerate([(0.99, 4000.0), (0.99, 3500.0), (0.995, 3700.0), (0.98, 2000.0)]))
    assert p._cheaper(judged, [0, 0, 0, 0]) == 1, "as well served, 12.5% less power"
    assert p._cheaper(judged, [0, 1, 1, 0]) == 0, "a drained instance costs move_cost of service"
    assert p._cheaper({0: (0.99, 4000.0), 1: (0.99, 3800.0)}, [0, 0]) == 0, "5% less is inside the margin"


def test_the_arrivals_dispersion_sees_bursts_but_not_a_change_of_rate() -> None:
    p = PlannerController(model=MODEL, period_s=3.0)

    def dispersion(counts: list[int]) -> float:
        p.history.clear()
        arrived = 0
        for k, c in enumerate([0, *counts]):
            arrived += c
            p.history.append(Counters(3.0 * k, arrived, 0, 0, 0))
        return p._dispersion(p.history[-1])

    assert dispersion([60, 58, 63, 61, 59, 62, 60, 57, 64, 60]) == 1.0, "steadier than Poisson reads as Poisson"
    shift = [60] * 5 + [120] * 5
    raw = float(np.var(shift, ddof=1) / np.mean(shift))
    assert dispersion(shift) == pytest.approx(60**2 / (2 * 9) / 90) and dispersion(shift) < raw / 4
    assert dispersion([20, 140, 30, 120, 10, 150, 40, 110, 25, 135]) > 10.0
    assert dispersion([20, 140, 30]) == 1.0, "too few periods to tell"


def test_a_bursty_load_is_judged_harder_than_a_poisson_one_of_the_same_rate() -> None:
    from wattserve.experiments.plan_sim import SimPlanModel

    model = SimPlanModel(CLUSTER, 1.0, 0.04)
    split = [Layout(4, 600.0, 600.0)]
    poisson = model.predict(LoadEstimate(20.0, 8192.0, 200.0), split)[0][0]
    bursty = model.predict(LoadEstimate(20.0, 8192.0, 200.0, dispersion=6.0), split)[0][0]
    assert bursty < poisson - 0.05


@pytest.mark.parametrize("need", [0.3, 0.9, 0.99])
def test_a_candidate_below_its_need_stops_with_a_bound_and_one_above_is_judged_in_full(need: float) -> None:
    """The simulated model's early stop is safe: a stopped candidate reports an upper bound on what
    its full run scores (so it is never preferred for having been stopped), under its need; a
    candidate that reaches its need scores exactly as without one."""
    from wattserve.experiments.plan_sim import SimPlanModel

    model = SimPlanModel(CLUSTER, 1.0, 0.04)
    load = LoadEstimate(38.0, 8192.0, 147.0, backlog=20)
    short, enough = Layout(2, 600.0, 600.0), Layout.all_colocated(600.0)
    (full, _), (ok, _) = model.predict(load, [short, enough])
    (bound, _), (ok_need, _) = model.predict(load, [short, enough], None, [need, min(ok, need)])
    assert full < need and full < bound < need, "stopped early: its bound is above its full score, below its need"
    assert ok_need == ok


def test_the_model_replays_enough_of_the_horizon_for_decode_batches_to_fill() -> None:
    """At 115 req/s of Azure-conversation-like requests (about 280 output tokens), two decode H100s
    fall behind only once their batches grow over a request's life (several seconds): a replay cut
    at 800 requests (7 s) calls the split perfect, the 1,500 the model replays does not."""
    from wattserve.experiments.plan_sim import SimPlanModel

    sc = get_scenario("rapid-h100")
    cluster = sc.scenario(replace(sc.arm("planner"), governor="max-clock")).cluster
    load, split = LoadEstimate(115.0, 1100.0, 280.0), [Layout(6, 200.0, 700.0)]
    short = SimPlanModel(cluster, 1.0, 0.04, max_requests=800).predict(load, split)[0][0]
    full = SimPlanModel(cluster, 1.0, 0.04).predict(load, split)[0][0]
    assert short == 1.0 and full < 0.9


def test_a_plan_to_stay_stands_while_its_load_holds_and_a_shift_ends_it() -> None:
    p = PlannerController(model=MODEL)
    then = LoadEstimate(30.0, 8192.0, 128.0, backlog=2, dispersion=1.0)
    assert p._holds(then, LoadEstimate(31.4, 8500.0, 120.0, backlog=6, dispersion=1.05))
    assert not p._holds(then, LoadEstimate(31.8, 8192.0, 128.0, backlog=2)), "6% more arrivals"
    assert not p._holds(then, LoadEstimate(30.0, 500.0, 128.0, backlog=2)), "a phase shift"
    assert not p._holds(then, LoadEstimate(30.0, 8192.0, 128.0, backlog=7)), "five more queued"
    assert not p._holds(then, LoadEstimate(30.0, 8192.0, 128.0, backlog=2, dispersion=3.0)), "burstier"


def test_a_reused_plan_keeps_the_layout_of_the_search_before_it() -> None:
    _, _, planner = planner_run(18.0, 300)
    keys = [(d["layout"], d["prefill"], d["prefill_cap_w"], d["decode_cap_w"]) for d in planner.decisions]
    reused = [k for k, d in enumerate(planner.decisions) if d["reused"]]
    assert reused and len(reused) < len(keys)
    assert all(keys[k] == keys[k - 1] for k in reused)
    assert len(planner.planning_cpu_s) == len(planner.planning_s) == len(keys)


class _FavoursConcurrent:
    """A model that serves every request on a concurrent layout and half of them on any other, and
    records what it was asked about."""

    def __init__(self) -> None:
        self.asked: list[Layout] = []

    def predict(self, load: LoadEstimate, layouts, current=None, need=None):  # noqa: ANN001, ANN201
        self.asked += layouts
        return [(1.0 if lay.concurrent else 0.5, 4000.0) for lay in layouts]


@pytest.mark.parametrize("concurrent", [False, True])
def test_concurrent_layouts_are_judged_only_when_asked_and_reached_in_one_decision(concurrent: bool) -> None:
    model = _FavoursConcurrent()
    p = PlannerController(model=model, screen=MODEL, period_s=3.0, concurrent=concurrent, start_colocated=False)
    p.start(_state(0.0, 0, 0, 0, 0))
    p.history.append(Counters(0.0, 0, 0, 0, 0))
    actions = p.decide(_state(6.0, 10, 110, 120 * 1024, 110 * 128))
    assert any(lay.concurrent for lay in model.asked) is concurrent
    roles = {a.instance: a.role for a in actions if isinstance(a, SetRole)}
    caps = {a.gpu: a.watts for a in actions if isinstance(a, SetPowerCap)}
    if concurrent:
        assert roles == {i: "concurrent" for i in range(8)} and p.decisions[-1]["layout"] == "concurrent"
        assert caps == {i: pytest.approx(600.0) for i in range(8)}
    else:
        assert "concurrent" not in roles.values()


def test_a_simulated_planner_concurrent_run_judges_concurrent_layouts_holds_the_budget_and_finishes() -> None:
    run = build_run(SC.scenario(SC.arm("planner-concurrent"), 0),
                    make_workload("sonnet-shift", 38.0, 0, per_phase=150))
    planner = run.controller
    assert isinstance(planner, PlannerController) and planner.concurrent and "concurrent" in run.cluster.roles
    assert planner.name == "planner-concurrent" and planner.model.seed_running  # type: ignore[attr-defined]
    asked: list[Layout] = []
    predict = planner.model.predict

    def recorded(load, layouts, current=None, need=None):  # noqa: ANN001, ANN202
        asked.extend(layouts)
        return predict(load, layouts, current, need)

    planner.model.predict = recorded  # type: ignore[method-assign]
    res = run.run()
    assert any(lay.concurrent for lay in asked)
    assert caps_sum_peak(res) <= SC.budget_w + 1e-6
    assert np.all(res.records.status == 1)


def test_a_warm_model_starts_each_candidate_from_the_batches_running_now() -> None:
    """The running requests are seeded on the model's instances of their role, the busiest first,
    and are not scored; with 200 requests decoding on every instance the same colocated layout is
    judged worse than from an empty cluster, which fills its batches only over a request's life."""
    from wattserve.experiments.plan_sim import SimPlanModel

    sc = get_scenario("rapid-h100")
    cluster = sc.scenario(sc.arm("planner")).cluster
    lay = Layout.all_colocated(500.0)
    running = tuple(("colocated", n) for n in (200, 210, 190, 205, 195, 200, 215, 185))
    load = LoadEstimate(184.0, 1160.0, 257.0, running=running)
    warm = SimPlanModel(cluster, 1.0, 0.04, seed_running=True, horizon_s=8.0, max_requests=800)
    cold = SimPlanModel(cluster, 1.0, 0.04, horizon_s=8.0, max_requests=800)
    assert warm._seeds(load, lay) == [i for i, n in enumerate(sorted((n for _, n in running), reverse=True))
                                      for _ in range(n)]
    assert cold._seeds(load, lay) == [] and warm._seeds(load, None) == []
    (att_warm, _), = warm.predict(load, [lay], lay)
    (att_cold, _), = cold.predict(load, [lay], lay)
    assert att_warm < att_cold - 0.1


def test_a_warm_model_seeds_no_instance_past_its_batch_limit_or_most_of_its_kv_cache() -> None:
    """Counts above what an instance can run (a backlog of hand-offs, drawn contexts that would not
    fit) are left out rather than seeded into preemptions the cluster is not having."""
    from wattserve.catalog import get_gpu, get_model
    from wattserve.experiments.plan_sim import SEED_KV_SHARE, SimPlanModel

    sc = get_scenario("rapid-h100")
    cluster = sc.scenario(sc.arm("planner")).cluster
    lay = Layout(4, 500.0, 500.0)
    load = LoadEstimate(100.0, 4000.0, 900.0, running=(("decode", 400), ("decode", 50), ("prefill", 3)))
    model = SimPlanModel(cluster, 1.0, 0.04, seed_running=True)
    wl, seeds, _ = model._workload(load, lay)
    cap = SEED_KV_SHARE * get_model(cluster.model).kv_capacity_tokens(get_gpu(cluster.gpu).hbm_bytes, cluster.tp,
                                                                         cluster.engine.mem_util)
    for iid in set(seeds):
        rows = [j for j, s in enumerate(seeds) if s == iid]
        assert len(rows) <= cluster.engine.max_seqs
        assert wl.prompt_tokens[rows].sum() <= cap
    assert seeds.count(4) < 400 and seeds.count(5) == 50 and seeds.count(0) == 3
