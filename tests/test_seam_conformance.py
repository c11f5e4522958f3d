"""Both back ends fill the seam with one meaning: the same scripted controllers run against the
simulator and against the tiny CPU runtime, and every field of what they observe is checked."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from wattserve.control import BudgetGuard, ControlLoop
from wattserve.schema.cluster import ClusterConfig
from wattserve.seam import (
    PHASES,
    Action,
    Backend,
    BudgetSignal,
    ClusterInfo,
    ClusterState,
    SetBatchLimit,
    SetClock,
    SetPowerCap,
)
from wattserve.sim.backend import SimBackend
from wattserve.sim.cluster import Cluster
from wattserve.workload import LengthDist, SyntheticSpec, generate

ROLES = (*PHASES, "colocated")


@dataclass
class Recorder:
    """Observes every period, takes its own energy differences, and exercises each action once."""

    backend: Backend
    name: str = "recorder"
    period_s: float = 0.1
    states: list[ClusterState] = field(default_factory=list)
    watts: list[list[float]] = field(default_factory=list)

    def start(self, state: ClusterState) -> list[Action]:
        self.states.append(state)
        per = state.budget_w / len(state.gpus)
        return [SetPowerCap(g.index, min(g.cap_max_w, max(g.cap_min_w, per))) for g in state.gpus]

    def decide(self, state: ClusterState) -> list[Action]:
        prev = self.states[-1]
        dt = state.time_s - prev.time_s
        if dt > 0:
            self.watts.append([(g.energy_j - p.energy_j) / dt for g, p in zip(state.gpus, prev.gpus)])
        self.states.append(state)
        if len(self.states) == 3:
            info = self.backend.info()
            return [SetClock(0, info.clocks_mhz[len(info.clocks_mhz) // 2]), SetBatchLimit(0, 32)]
        return []


def check_info(info: ClusterInfo, n_gpus: int) -> None:
    assert info.gpu and info.model and info.tp >= 1
    assert info.clocks_mhz and list(info.clocks_mhz) == sorted(set(info.clocks_mhz)) and info.clocks_mhz[0] > 0
    assert 0 < info.cap_min_w <= info.cap_max_w
    assert sorted(g for gs in info.instance_gpus for g in gs) == list(range(n_gpus))
    assert all(len(gs) == info.tp for gs in info.instance_gpus)


def check_states(states: list[ClusterState], info: ClusterInfo, requests: int) -> None:
    assert len(states) >= 4
    check_info(info, len(states[0].gpus))
    for s in states:
        assert s.budget_w > 0
        assert [g.index for g in s.gpus] == list(range(len(s.gpus)))
        assert [i.iid for i in s.instances] == list(range(len(s.instances)))
        for g in s.gpus:
            assert g.index in s.instances[g.instance].gpus
            assert g.cap_min_w == info.cap_min_w and g.cap_max_w == info.cap_max_w
            assert g.cap_min_w <= g.cap_w <= g.cap_max_w and g.cap_min_w <= g.cap_target_w <= g.cap_max_w
            assert g.clock_max_mhz == info.clock_max_mhz > 0
            assert 0 < g.clock_mhz <= g.clock_max_mhz
            assert g.locked_clock_mhz is None or g.locked_clock_mhz in info.clocks_mhz
            assert g.power_w >= 0 and g.energy_j >= 0 and isinstance(g.throttled, bool)
        for i in s.instances:
            assert i.role in ROLES and (i.switching_to is None or i.switching_to in ROLES)
            assert i.gpus == info.instance_gpus[i.iid]
            assert min(i.waiting, i.waiting_tokens, i.prefilling, i.running) >= 0
            assert 0.0 <= i.kv_usage <= 1.0
            assert i.max_seqs >= 1
            assert i.ttft_p90_s is None or i.ttft_p90_s > 0
            assert i.tpot_p90_s is None or i.tpot_p90_s > 0
            assert i.oldest_wait_s >= 0
            assert min(i.prompt_tokens, i.output_tokens, i.completed) >= 0
    for a, b in zip(states, states[1:]):
        assert b.time_s >= a.time_s
        for ga, gb in zip(a.gpus, b.gpus):
            assert gb.energy_j >= ga.energy_j
        for ia, ib in zip(a.instances, b.instances):
            assert ib.prompt_tokens >= ia.prompt_tokens
            assert ib.output_tokens >= ia.output_tokens
            assert ib.completed >= ia.completed
    first, last = states[0], states[-1]
    assert all(gl.energy_j > gf.energy_j for gf, gl in zip(first.gpus, last.gpus))
    assert sum(i.completed for i in last.instances) == requests
    assert all(i.prompt_tokens > 0 for i in last.instances if i.role in ("prefill", "colocated"))
    assert any(i.ttft_p90_s is not None for s in states for i in s.instances if i.role == "prefill")
    assert any(i.tpot_p90_s is not None for s in states for i in s.instances if i.role == "decode")
    assert any(i.oldest_wait_s > 0 for s in states for i in s.instances)
    assert any(g.locked_clock_mhz is not None for g in last.gpus)
    assert last.instances[0].max_seqs == 32


def run_sim(n: int = 80) -> tuple[list[ClusterState], ClusterInfo, list[list[float]], Cluster]:
    wl = generate(SyntheticSpec(rate=40.0, num_requests=n, duration_s=None,
                                prompt=LengthDist("uniform", low=200, high=3000),
                                output=LengthDist("uniform", low=20, high=200)), 0)
    cluster = Cluster(ClusterConfig(prefill=1, decode=1), wl)
    budget = BudgetSignal.constant(1200.0)
    backend = SimBackend(cluster, budget, 1.0, 0.05)
    rec, other = Recorder(backend), Recorder(backend, name="other", period_s=0.37)
    ControlLoop(backend, BudgetGuard(backend, budget), [rec, other]).start()
    cluster.run()
    rec.states.append(backend.observe())
    return rec.states, backend.info(), rec.watts, cluster


def test_simulator_conforms() -> None:
    states, info, watts, cluster = run_sim()
    check_states(states, info, 80)
    assert info.gpu == "h100" and info.tp == 1
    assert sum(i.output_tokens for i in states[-1].instances) == int(cluster.workload.output_tokens.sum())
    assert sum(i.prompt_tokens for i in states[-1].instances) >= int(cluster.workload.prompt_tokens.sum())
    assert all(w >= 0 for row in watts for w in row)


def test_sim_observation_has_no_side_effects() -> None:
    """Two controllers on different periods each see counters as of their own instant: observing
    twice at the same instant gives the same snapshot."""
    wl = generate(SyntheticSpec(rate=40.0, num_requests=40, duration_s=None,
                                prompt=LengthDist("uniform", low=200, high=3000),
                                output=LengthDist("uniform", low=20, high=200)), 1)
    cluster = Cluster(ClusterConfig(prefill=1, decode=1), wl)
    backend = SimBackend(cluster, BudgetSignal.constant(1400.0), 1.0, 0.05)
    pairs: list[tuple[ClusterState, ClusterState]] = []
    for t in (0.3, 0.6, 0.9):
        backend.call_at(t, lambda: pairs.append((backend.observe(), backend.observe())))
    cluster.run()
    assert len(pairs) == 3 and all(a == b for a, b in pairs)


async def _runtime_states(n: int) -> tuple[list[ClusterState], ClusterInfo, list[list[float]], list[tuple]]:
    from wattserve.runtime.backend import RuntimeBackend
    from wattserve.runtime.engine.sequence import SamplingParams
    from wattserve.runtime.request_state import RequestState
    from wattserve.runtime.router import Router
    from wattserve.runtime.server import ServeArgs, start_workers, worker_power

    args = ServeArgs(prefill=1, decode=1, seed=0)
    router = Router(await start_workers(args), args.model)
    await router.start(stats_period_s=0.05)
    try:
        agent = worker_power(router)
        budget = BudgetSignal.constant(1200.0)
        backend = RuntimeBackend(router, agent, budget, 1.0, 0.05)
        rec = Recorder(backend, period_s=0.05)
        ControlLoop(backend, BudgetGuard(backend, budget), [rec, Recorder(backend, name="other", period_s=0.13)]).start()

        sts = [router.submit([256, *f"conformance request {i} {'x' * (i * 7)}".encode()],
                             SamplingParams(max_tokens=8 + i % 24, temperature=0.0, ignore_eos=True))
               for i in range(n)]
        rec.states.append(backend.observe())

        async def drain(st: RequestState) -> None:
            while (await st.queue.get())[0] == "token":
                pass

        await asyncio.wait_for(asyncio.gather(*(drain(st) for st in sts)), 120)
        await asyncio.sleep(0.3)
        rec.states.append(backend.observe())
        seen_by_engines = [(w.stats["cap_w"], w.stats["locked_clock_mhz"]) for w in router.workers]
        return rec.states, backend.info(), rec.watts, seen_by_engines
    finally:
        await router.close()


def test_runtime_conforms() -> None:
    pytest.importorskip("torch")
    states, info, watts, seen_by_engines = asyncio.run(_runtime_states(24))
    check_states(states, info, 24)
    last = states[-1]
    assert seen_by_engines == [(g.cap_w, g.locked_clock_mhz) for g in last.gpus], \
        "each worker's step governor sees the cap in force and the clock lock of its GPU"
    assert seen_by_engines[0][1] == info.clocks_mhz[len(info.clocks_mhz) // 2]
    assert info.model == "tiny" and info.tp == 1
    assert sum(i.output_tokens for i in states[-1].instances) == sum(8 + i % 24 for i in range(24))
    assert all(w >= 0 for row in watts for w in row)
