"""The simulator after the iteration-level restructure: governed runs, exact splits, run end,
same-instant batching, phase energy, and a result that is plain data."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from wattserve.control import BudgetGuard
from wattserve.schema.cluster import ClusterConfig, EngineConfig
from wattserve.seam import ActuationLog, BudgetSignal, StepDecision, StepView
from wattserve.sim.backend import SimBackend
from wattserve.sim.cluster import Cluster
from wattserve.workload import LengthDist, SyntheticSpec, Workload, generate

KW = dict(rate=12, num_requests=250, duration_s=None, prompt=LengthDist("uniform", low=50, high=3000),
          output=LengthDist("uniform", low=1, high=400))


def workload(seed: int = 5, **over) -> Workload:
    return generate(SyntheticSpec(**{**KW, **over}), seed)


class ContextParity:
    """Stateless: full clock on even decode contexts per sequence, 1200 MHz on odd ones, one
    iteration at a time, so the clock changes every decode iteration."""

    name = "context-parity"

    def decide(self, view: StepView) -> StepDecision:
        if view.phase != "decode":
            return StepDecision(None, 1)
        s = view.shape
        return StepDecision(None if (s.decode_ctx // s.decode_seqs) % 2 == 0 else 1200, 1)


def _assert_same_timing(a, b) -> None:
    np.testing.assert_allclose(a.records.finish, b.records.finish, rtol=1e-9)
    np.testing.assert_allclose(a.records.ttft, b.records.ttft, rtol=1e-9)
    np.testing.assert_allclose(a.records.max_itl, b.records.max_itl, rtol=1e-9)
    assert a.itl_hist.mean == pytest.approx(b.itl_hist.mean, rel=1e-9)


@pytest.mark.parametrize("colocated", [False, True])
def test_a_governed_run_planned_as_a_table_matches_stepping_every_iteration(colocated: bool) -> None:
    eng = EngineConfig(max_seqs=32, colocated_token_budget=512)
    base = dict(prefill=0, decode=0, colocated=2) if colocated else dict(prefill=1, decode=2)
    table = Cluster(ClusterConfig(engine=eng, **base), workload(), governor=ContextParity).run()
    step = Cluster(ClusterConfig(engine=eng, max_run_iters=1, **base), workload(), governor=ContextParity).run()
    assert table.events < step.events / 3
    _assert_same_timing(table, step)
    clocks = np.concatenate([g.clock_values for g in table.gpus])
    assert {1200.0, 1980.0} <= set(clocks.tolist())
    assert sum(len(g.clock_times) for g in table.gpus) > 0.5 * sum(i.iterations for i in table.instances)
    e_table = sum(g.energy_j for g in table.gpus)
    e_step = sum(g.energy_j for g in step.gpus)
    assert e_table == pytest.approx(e_step, rel=0.01)


def _with_actions(spec: ClusterConfig, actions) -> object:
    cluster = Cluster(spec, workload())
    for t, fn in actions:
        cluster.loop.at(t, lambda _, fn=fn: fn(cluster))
    return cluster.run()


def test_closed_form_runs_split_exactly_at_clock_changes_and_role_switches() -> None:
    acts = [(3.0, lambda c: c.set_clock(1, 1200)), (5.0, lambda c: c.set_clock(2, 1500)),
            (7.0, lambda c: c.set_role(2, "prefill")), (9.0, lambda c: c.set_clock(1, None)),
            (14.0, lambda c: c.set_role(0, "decode"))]
    eng = EngineConfig(max_seqs=32)
    jump = _with_actions(ClusterConfig(prefill=1, decode=2, engine=eng), acts)
    step = _with_actions(ClusterConfig(prefill=1, decode=2, engine=eng, max_run_iters=1), acts)
    assert jump.events < step.events / 2
    assert [i.role_changes for i in jump.instances] == [1, 0, 1]
    _assert_same_timing(jump, step)
    assert 1200.0 in jump.gpus[1].clock_values.tolist() and 1500.0 in jump.gpus[2].clock_values.tolist()


def test_the_run_ends_with_the_workload_not_with_control_timers() -> None:
    wl = workload(num_requests=100)
    cluster = Cluster(ClusterConfig(prefill=1, decode=1), wl)
    budget = BudgetSignal((0.0, 500.0), (1400.0, 1000.0))
    backend = SimBackend(cluster, budget, 1.0, 0.05)
    BudgetGuard(backend, budget, ActuationLog())
    res = cluster.run()
    last = float(np.nanmax(res.records.finish))
    assert res.end_s == pytest.approx(last) and res.end_s < 100
    assert all(g.times[-1] <= res.end_s for g in res.gpus)


def test_requests_arriving_together_start_in_the_same_iteration() -> None:
    n = 4
    wl = Workload(np.zeros(n), np.full(n, 300), np.full(n, 20))
    res = Cluster(ClusterConfig(prefill=0, decode=0, colocated=1), wl).run()
    assert np.all(res.records.ttft == res.records.ttft[0])
    assert res.records.queue.max() == 0.0


def test_phase_energy_adds_up_and_lands_in_the_right_phase() -> None:
    for spec in (ClusterConfig(prefill=1, decode=1), ClusterConfig(prefill=0, decode=0, colocated=2)):
        res = Cluster(spec, workload(num_requests=120, rate=2)).run()
        for g in res.gpus:
            parts = g.prefill_energy_j + g.decode_energy_j + g.idle_energy_j
            assert parts == pytest.approx(g.energy_j, rel=1e-12)
            assert g.idle_energy_j > 0
        if spec.colocated:
            assert all(g.prefill_energy_j > 0 and g.decode_energy_j > 0 for g in res.gpus)
        else:
            prefill, decode = res.gpus
            assert decode.prefill_energy_j == 0 and prefill.decode_energy_j == 0
            assert prefill.prefill_energy_j > 0 and decode.decode_energy_j > 0


def test_a_result_is_plain_data() -> None:
    res = Cluster(ClusterConfig(prefill=1, decode=1), workload(num_requests=30)).run()
    back = pickle.loads(pickle.dumps(res))
    np.testing.assert_array_equal(back.records.finish, res.records.finish)
    assert "wattserve.sim" not in pickle.dumps(res).decode("latin-1")


def test_the_simulator_view_has_every_member_of_the_step_view_protocol() -> None:
    members = {n for n in vars(StepView) if not n.startswith("_")} - {"register", "name"}
    seen: list[dict] = []

    class Look:
        name = "look"

        def decide(self, view: StepView) -> StepDecision:
            values = {m: getattr(view, m) for m in members}
            seen.append({m: (v() if callable(v) else v) for m, v in values.items()})
            return StepDecision(None)

    Cluster(ClusterConfig(prefill=1, decode=1), workload(num_requests=20), governor=Look,
            slo_s=(1.0, 0.05)).run()
    assert members and seen
    phases = {s["phase"] for s in seen}
    assert phases == {"prefill", "decode"}
    for s in seen:
        assert 0.0 <= s["kv_usage"] <= 1.0 and s["slo_tpot_s"] == 0.05 and s["cap_w"] == 700
        assert s["shape"].tokens > 0 and s["now_s"] >= 0


class PromptShapes:
    """Records the prompt part of every step it is shown."""

    name = "prompt-shapes"

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, float, float]] = []

    def decide(self, view: StepView) -> StepDecision:
        s = view.shape
        if s.prefill_tokens:
            self.seen.append((s.prefill_tokens, s.prefill_ctx, s.prefill_attn_pairs, s.prefill_masked_pairs))
        return StepDecision(None, 1)


def test_chunked_prompt_steps_carry_the_pairs_above_each_chunks_diagonal() -> None:
    """A 40-token prompt under a 16-token budget runs as chunks of 16, 16 and 8, as the engine's
    scheduler chunks it (test_engine_governor.py): causal pairs n * (context + (n + 1) / 2), masked
    pairs n * (n - 1) / 2, the shape an engine that computes each chunk's rectangle pays for."""
    gov = PromptShapes()
    wl = Workload(np.zeros(1), np.array([40]), np.array([3]))
    eng = EngineConfig(max_seqs=4, colocated_token_budget=16)
    Cluster(ClusterConfig(prefill=0, decode=0, colocated=1, engine=eng), wl, governor=lambda: gov).run()
    assert gov.seen == [(16, 0, 16 * 8.5, 120.0), (16, 16, 16 * 24.5, 120.0), (8, 32, 8 * 36.5, 28.0)]
