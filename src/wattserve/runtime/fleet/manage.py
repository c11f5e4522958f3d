"""`wattserve manage`: hold an existing fleet under a power budget with one of our policies.

Every `poll_s` it reads each engine's /metrics and each agent's GPUs; the ControlLoop runs the
policy on its own period through the BudgetGuard, exactly as over the simulator or our runtime.
The guard's accounting (caps in force plus caps still settling, in integer milliwatts) and the
agents' read-back caps are both sampled at every poll into caps.csv, so "the budget held at every
instant" is a statement about a file, not a belief. An endpoint or agent that goes away is marked
down and the rest stay managed; at exit the agents restore their defaults unless --keep-caps.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wattserve.control import BudgetGuard, ControlLoop, make_controller
from wattserve.control.needs import POLICY_NEEDS, missing
from wattserve.errors import UsageError
from wattserve.runtime.fleet.backend import FleetBackend
from wattserve.runtime.fleet.endpoints import EndpointPool
from wattserve.runtime.fleet.engines import ENGINES, EngineSpec
from wattserve.runtime.power.agent_client import AgentPool
from wattserve.schema.agent import ManageConfig
from wattserve.seam import ActuationLog


def check_policy(policy: str, spec: EngineSpec) -> None:
    """Refuse a policy that reads a field this engine cannot fill or takes an action it cannot
    take at run time, naming both (field `control.policy`)."""
    if policy not in POLICY_NEEDS:
        raise UsageError(f"{policy!r} has no declared needs; allowed: {', '.join(POLICY_NEEDS)}", "control.policy")
    fields, actions = missing(policy, spec.fills, spec.runtime_actions | {"SetPowerCap", "SetClock"})
    if not fields and not actions:
        return
    why = [f"its /metrics has no {f}" for f in fields] + [spec.refusals.get(a, f"{a} is not supported") for a in actions]
    ok = [p for p in POLICY_NEEDS if not any(missing(p, spec.fills, spec.runtime_actions | {"SetPowerCap", "SetClock"}))]
    raise UsageError(f"{policy} cannot run on {spec.name}: {'; '.join(why)}; allowed: {', '.join(ok)}",
                     "control.policy")


@dataclass
class CapSample:
    time_s: float
    budget_w: float
    committed_w: float
    """The guard's sum: caps in force plus caps still settling, per GPU the larger."""
    readback_w: float
    """The agents' read-back caps summed (the larger of asked and in force per GPU)."""
    alive_endpoints: int
    alive_agents: int


@dataclass
class ManageRun:
    samples: list[CapSample] = field(default_factory=list)
    log: ActuationLog = field(default_factory=ActuationLog)
    held_from_s: float | None = None
    """When the guard's committed sum first fitted the budget (caps found above it at start are
    brought down first, and take the settle time to do so)."""
    summary: dict[str, Any] = field(default_factory=dict)


async def manage(cfg: ManageConfig, note: Callable[[str], None] = print, run: ManageRun | None = None) -> ManageRun:
    """Run until `cfg.duration_s` passes or SIGTERM/SIGINT; return what happened."""
    run = run if run is not None else ManageRun()
    spec = ENGINES[cfg.engine]
    policy = str(cfg.control.policy)
    check_policy(policy, spec)
    agents = AgentPool(list(cfg.agent_urls()), cfg.token)
    endpoints = EndpointPool(cfg.endpoint_urls(), cfg.role_list(), spec, note=note)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    t_start = time.monotonic()
    try:
        power = await agents.start()
        await endpoints.start()
        n, m = len(endpoints.endpoints), power.count()
        if m % n:
            raise UsageError(f"{m} GPUs cannot be split evenly over {n} endpoints; allowed: agents whose GPUs "
                             "number a multiple of the endpoints", "agents")
        budget = cfg.control.budget_signal(floor_w=sum(power.cap_range_w(i)[0] for i in range(m)))
        assert budget is not None
        slo = cfg.slo
        backend = FleetBackend(endpoints, power, budget, slo.ttft_ms and slo.ttft_ms / 1e3,
                               slo.tpot_ms and slo.tpot_ms / 1e3, target=cfg.control.target_signal(), log=run.log)
        params: dict[str, Any] = {}
        if policy == "static-cap":
            params["cap_w"] = budget.floor() / m
        guard = BudgetGuard(backend, budget, log=run.log)
        initial_w = guard.committed_sum() / 1000.0
        guard.enforce()
        ControlLoop(backend, guard, [make_controller(policy, **params)]).start()
        note(f"wattserve manage: {policy} over {n} {spec.name} endpoint(s) and {m} GPU(s) on {len(agents.links)} "
             f"agent(s), budget {budget.at(0.0):g} W")
        deadline = None if cfg.duration_s is None else t_start + cfg.duration_s
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            wait = cfg.poll_s if deadline is None else max(0.0, min(cfg.poll_s, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            was = [a.alive for a in agents.links]
            await asyncio.gather(agents.poll(), endpoints.poll())
            for a, before in zip(agents.links, was, strict=True):
                if before and not a.alive:
                    note(f"agent {a.url} is down ({a.error}); its GPUs keep their last caps")
            _sample(run, backend, guard, agents, endpoints)
        run.summary = _summary(cfg, spec, run, backend, endpoints, agents, initial_w, time.monotonic() - t_start)
    finally:
        if not cfg.keep_caps and agents.power is not None:
            failed = await agents.restore()
            if failed:
                note(f"wattserve manage: could not ask {', '.join(failed)} to restore defaults")
        await agents.close()
        await endpoints.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return run


def _sample(run: ManageRun, backend: FleetBackend, guard: BudgetGuard, agents: AgentPool,
            endpoints: EndpointPool) -> None:
    p = backend.power
    now = backend.now()
    committed = guard.committed_sum() / 1000.0
    readback = sum(max(p.power_cap_w(g), p.cap_in_force_w(g)) for g in range(p.count()))
    budget = backend.budget.at(now)
    if run.held_from_s is None and committed <= budget + 1e-6 and not any(guard.settling.values()):
        run.held_from_s = now
    run.samples.append(CapSample(now, budget, committed, readback, sum(e.alive for e in endpoints.endpoints),
                                 sum(a.alive for a in agents.links)))


def _summary(cfg: ManageConfig, spec: EngineSpec, run: ManageRun, backend: FleetBackend, endpoints: EndpointPool,
             agents: AgentPool, initial_w: float, elapsed_s: float) -> dict[str, Any]:
    held = [s for s in run.samples if run.held_from_s is not None and s.time_s >= run.held_from_s]
    max_sum = max((max(s.committed_w, s.readback_w) for s in held), default=None)
    over = [s for s in held if max(s.committed_w, s.readback_w) > s.budget_w + 1e-6]
    caps = [e for e in run.log.entries if e.kind == "cap"]
    return {
        "engine": spec.name,
        "policy": cfg.control.policy,
        "budget_w": backend.budget.at(0.0),
        "min_budget_w": min(s.budget_w for s in run.samples) if run.samples else backend.budget.at(0.0),
        "max_sum_caps_w": max_sum,
        "budget_held": bool(held) and not over,
        "held_from_s": run.held_from_s,
        "initial_sum_caps_w": initial_w,
        "samples": len(run.samples),
        "samples_over_budget": len(over),
        "duration_s": elapsed_s,
        "cap_actuations": {st: sum(1 for e in caps if e.status == st) for st in ("applied", "refused", "failed")},
        "endpoints": [{"url": e.url, "role": e.role, "alive": e.alive, "down_at_s": e.down_at_s, "up_at_s": e.up_at_s,
                       "error": e.error} for e in endpoints.endpoints],
        "agents": [{"url": a.url, "alive": a.alive, "gpus": len(a.listing), "error": a.error} for a in agents.links],
        "gpus": backend.info().gpu_count,
        "gpu": backend.info().gpu,
        "modelled": backend.power.modelled,
        "fills": sorted(spec.fills),
    }
