"""The planner's knobs beyond roles and caps (issue 15): step-governor targets, clock locks and batch
limits, through the seam (`SetStepTarget`, `SetClock`, `SetBatchLimit`) in the simulator, and the
planner's rules for them: slack is spent only while the load holds and the model and the observed
latencies both show it; a change of load returns it; a smaller batch is judged only where TPOT is
over its SLO."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from wattserve.control.planner import PlannerController
from wattserve.experiments.plan_sim import WARM, SimPlanModel
from wattserve.experiments.scenarios import get_scenario
from wattserve.governors.decode_slack import DecodeSlackGovernor
from wattserve.schema.cluster import ClusterConfig, EngineConfig
from wattserve.seam import (
    ActuationRefused,
    BudgetSignal,
    ClusterState,
    GpuState,
    InstanceState,
    Layout,
    LoadEstimate,
    SetBatchLimit,
    SetClock,
    SetStepTarget,
)
from wattserve.sim.backend import SimBackend
from wattserve.sim.cluster import Cluster
from wattserve.workload import Workload

SC = get_scenario("rapid-h100")
CLUSTER = SC.scenario(SC.arm("planner")).cluster


def _workload(n: int = 200, rate: float = 40.0) -> Workload:
    rng = np.random.default_rng(0)
    return Workload(np.cumsum(rng.exponential(1 / rate, n)), rng.integers(200, 1200, n), rng.integers(50, 300, n))


def _run(governor: str, target: float | None) -> np.ndarray:
    spec = ClusterConfig(gpu="h100", model="llama-3.1-8b", prefill=1, decode=1, engine=EngineConfig(governor=governor))
    cluster = Cluster(spec, _workload(), slo_s=(1.0, 0.04))
    if target is not None:
        for i in cluster.instances:
            cluster.set_step_target(i.iid, target)
    res = cluster.run()
    return np.stack([res.records.ttft, res.records.tpot])


def test_a_decode_slack_governor_at_target_zero_runs_exactly_as_max_clock() -> None:
    """A planner starts its governors at 0, so a run whose planner never raises it is the run
    without a governor, to the last record."""
    assert np.array_equal(_run("decode-slack", 0.0), _run("max-clock", None))
    assert not np.array_equal(_run("decode-slack", 0.7), _run("max-clock", None))


def test_set_step_target_retargets_a_governor_that_takes_one_and_is_refused_by_one_that_does_not() -> None:
    spec = ClusterConfig(gpu="h100", model="llama-3.1-8b", prefill=1, decode=1, engine=EngineConfig(governor="biscale"))
    backend = SimBackend(Cluster(spec, _workload(), slo_s=(1.0, 0.04)), BudgetSignal.constant(1400.0), 1.0, 0.04)
    assert [i.step_target for i in backend.observe().instances] == [0.9, 0.9]
    backend.apply(SetStepTarget(1, 0.5))
    assert [i.step_target for i in backend.observe().instances] == [0.9, 0.5]
    with pytest.raises(ActuationRefused, match="allowed: 0 <= share <= 1"):
        backend.apply(SetStepTarget(1, 1.5))
    plain = SimBackend(Cluster(spec.model_copy(update={"engine": EngineConfig()}), _workload()),
                       BudgetSignal.constant(1400.0), 1.0, 0.04)
    assert [i.step_target for i in plain.observe().instances] == [None, None]
    with pytest.raises(ActuationRefused, match="takes no target; allowed: tpot-slack, biscale, decode-slack"):
        plain.apply(SetStepTarget(0, 0.5))


def test_the_simulated_model_prices_clock_locks_step_targets_and_batch_limits() -> None:
    """A lock or a target draws less power for no better service; a batch limit far below the
    batch the load needs serves less."""
    model = SimPlanModel(CLUSTER.model_copy(update={"engine": CLUSTER.engine.model_copy(
        update={"governor": "decode-slack"})}), 1.0, 0.04, **WARM)
    lay = Layout(5, 500.0, 500.0, step_target=0.0)
    load = LoadEstimate(60.0, 1000.0, 250.0, running=(("prefill", 0),) * 5 + (("decode", 40),) * 3)
    (att, w), (att_lock, w_lock), (att_tg, w_tg) = model.predict(
        load, [lay, replace(lay, decode_clock_mhz=990), replace(lay, step_target=0.7)], lay)
    assert w_lock < 0.97 * w and att_lock <= att
    assert w_tg < 0.97 * w and att_tg <= att
    heavy = LoadEstimate(150.0, 1000.0, 250.0, running=load.running)
    (full, _), (small, _) = model.predict(heavy, [lay, replace(lay, decode_max_seqs=8)], lay)
    assert small < full - 0.1


def _state(t: float, arrived: int, tpot_p90: float | None = 0.01, targets: float | None = 0.0,
           locks: tuple[int | None, int | None] = (None, None), max_seqs: int = 256) -> ClusterState:
    """Four prefill and four decode instances of one H100 each, under 4,000 W, `arrived` requests
    so far (all completed, 1,000 prompt and 200 output tokens each)."""
    insts, gpus = [], []
    for i in range(8):
        role = "prefill" if i < 4 else "decode"
        insts.append(InstanceState(
            iid=i, role=role, switching_to=None, gpus=(i,), waiting=0, waiting_tokens=0, prefilling=0,
            running=0 if role == "prefill" else 20, kv_usage=0.1, max_seqs=256 if role == "prefill" else max_seqs,
            ttft_p90_s=0.1 if role == "prefill" else None, tpot_p90_s=tpot_p90 if role == "decode" else None,
            oldest_wait_s=0.0, prompt_tokens=1000 * arrived if i == 0 else 0,
            output_tokens=200 * arrived if i == 4 else 0, completed=arrived if i == 4 else 0, step_target=targets))
        lock = locks[0] if role == "prefill" else locks[1]
        gpus.append(GpuState(index=i, instance=i, cap_w=500.0, cap_target_w=500.0, cap_min_w=200.0, cap_max_w=700.0,
                             clock_mhz=1980 if lock is None else lock, clock_max_mhz=1980, locked_clock_mhz=lock,
                             power_w=300.0, energy_j=0.0, throttled=False))
    return ClusterState(t, 4000.0, 1.0, 0.04, tuple(insts), tuple(gpus))


class _Slack:
    """A model under which every layout serves everything and each step of slack draws 5% less
    (the layout with four prefill instances at 500 W draws least of the splits, so it stays)."""

    def __init__(self, att: float = 1.0) -> None:
        self.att = att
        self.judged: list[Layout] = []

    def predict(self, load, layouts, current=None, need=None):  # noqa: ANN001, ANN201
        self.judged += layouts
        out = []
        for lay in layouts:
            w = 3000.0 if (lay.prefill, lay.prefill_cap_w) == (4, 500.0) else 3800.0
            w *= 0.95 ** (bool(lay.step_target) + (lay.step_target or 0) * 5 + (lay.decode_clock_mhz is not None)
                          + (lay.prefill_clock_mhz is not None))
            att = self.att if lay.decode_max_seqs is None else self.att + 0.05
            out.append((att, w))
        return out


def _planner(model: _Slack) -> PlannerController:
    p = PlannerController(model=model, screen=model, trim_model=model, colocated=False, cap_levels=1)
    p._candidates = lambda state: [replace(Layout(4, 500.0, 500.0), step_target=0.0)]  # type: ignore[method-assign]
    return p


def _steady(p: PlannerController, periods: int, tpot_p90: float = 0.01) -> list[list[object]]:
    """`periods` decisions 3 s apart at a steady 30 req/s, from the planner's start, each seeing
    the targets, locks and batch limits the decisions before it set."""
    world: dict[str, object] = {"targets": 0.0, "locks": (None, None), "max_seqs": 256}

    def apply(actions: list[object]) -> list[object]:
        for a in actions:
            if isinstance(a, SetStepTarget):
                world["targets"] = a.share
            elif isinstance(a, SetClock):
                locks = list(world["locks"])  # type: ignore[call-overload]
                locks[a.gpu >= 4] = a.mhz
                world["locks"] = tuple(locks)
            elif isinstance(a, SetBatchLimit) and a.instance >= 4:
                world["max_seqs"] = a.max_seqs
        return actions

    apply(p.start(_state(0.0, 0, tpot_p90, **world)))  # type: ignore[arg-type]
    return [apply(p.decide(_state(3.0 * k, 90 * k, tpot_p90, **world)))  # type: ignore[arg-type]
            for k in range(1, periods + 1)]


def test_while_the_load_holds_and_shows_slack_the_planner_raises_the_step_target_then_locks_clocks() -> None:
    p = _planner(_Slack())
    acts = _steady(p, 12)
    assert acts[0] == [], "the first decision searches and stays"
    assert acts[1] == [], "the next judges the layout in force at the stressed load"
    assert acts[2] == [SetStepTarget(i, 0.5) for i in range(8)]
    assert p.decisions[2]["step_target"] == 0.5 and p.decisions[2]["reused"]
    assert acts[3] == [SetStepTarget(i, 0.7) for i in range(8)] and acts[4] == [SetStepTarget(i, 0.9) for i in range(8)]
    assert acts[5] == [SetClock(g, 1782) for g in range(4, 8)], "then the decode clocks, a level below 1,980 MHz"
    assert SetClock(0, 1782) in acts[6] + acts[7] + acts[8] + acts[9], "and, once the decode clock settles, prefill"


def test_no_slack_is_spent_where_the_observed_tpot_is_near_its_slo() -> None:
    p = _planner(_Slack())
    acts = _steady(p, 8, tpot_p90=0.03)
    assert all(isinstance(a, SetClock) and a.gpu < 4 for a in sum(acts, [])), "prefill's TTFT leaves slack"
    assert all(not lay.step_target and lay.decode_clock_mhz is None for lay in p.model.judged)  # type: ignore[attr-defined]


def test_a_search_returns_the_slack_unless_it_was_judged_at_a_load_at_least_as_heavy() -> None:
    """A target of 0.5 judged at 1.25x the planned load stays through a search at the same load,
    and goes (back to 0) in a search at a heavier one."""
    p = _planner(_Slack())
    assert _steady(p, 3)[-1] == [SetStepTarget(i, 0.5) for i in range(8)]
    p._last = None
    assert p.decide(_state(12.0, 90 * 4, targets=0.5)) == []
    assert not p.decisions[-1]["reused"] and p.decisions[-1]["step_target"] == 0.5
    acts = p.decide(_state(15.0, 90 * 4 + 180, targets=0.5))
    assert not p.decisions[-1]["reused"] and acts == [SetStepTarget(i, 0.0) for i in range(8)]


def test_over_its_tpot_slo_a_search_judges_a_smaller_batch_and_takes_it_when_it_serves_better() -> None:
    p = _planner(_Slack(att=0.8))
    acts = _steady(p, 1, tpot_p90=0.05)
    assert any(lay.decode_max_seqs == 128 for lay in p.model.judged)  # type: ignore[attr-defined]
    assert [a for a in acts[0] if isinstance(a, SetBatchLimit)] == [SetBatchLimit(i, 128) for i in range(4, 8)]
    q = _planner(_Slack(att=0.8))
    _steady(q, 1, tpot_p90=0.03)
    assert not any(lay.decode_max_seqs for lay in q.model.judged)  # type: ignore[attr-defined]


def test_the_governor_retarget_is_bounded() -> None:
    g = DecodeSlackGovernor()
    g.retarget(0.0)
    assert g.target_share == 0.0
    with pytest.raises(ValueError, match="allowed"):
        g.retarget(-0.1)


@pytest.mark.parametrize(("named", "runs"), [(None, "decode-slack"), ("max-clock", "max-clock"), ("biscale", "biscale")])
def test_a_planner_run_that_names_no_governor_gets_one_whose_target_it_sets(named: str | None, runs: str) -> None:
    from wattserve.schema.loading import load_scenario
    from wattserve.schema.serve import ServeConfig

    engine = {} if named is None else {"cluster": {"engine": {"governor": named}}}
    assert load_scenario(None, {"control": {"policy": "planner", "budget_w": 4000}, **engine}).cluster.engine.governor == runs
    assert load_scenario(None, {"control": {"policy": "rapid", "budget_w": 4000}}).cluster.engine.governor == "max-clock"
    serve = ServeConfig(control={"policy": "planner", "budget_w": 1400}, **({} if named is None else {"governor": named}))
    assert serve.governor == runs
