"""The external-engine back end: the `Backend` seam over a fleet of vLLM or SGLang servers (read
through their /metrics) and the node agents that own their GPUs, so RAPID's power moves, the
uniform caps and any other policy whose needs the engine can meet run unchanged.

Instance i is endpoint i; its GPUs are the i-th equal share of the agents' GPUs, in the order the
agents were given and list them (one endpoint per TP group, as the fleet was launched). What an
engine cannot show (`EngineSpec.fills`) is filled with a neutral value and the policies that need
it are refused before the run (`control.needs`); what it cannot change at run time (batch limits,
roles, compute shares) is refused with the engine's reason. Caps and clocks go to the agents.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from wattserve.catalog.gpus import gpu_key
from wattserve.runtime.fleet.endpoints import EndpointPool
from wattserve.runtime.fleet.engines import EngineSpec
from wattserve.runtime.power.gpu_view import gpu_state, log_failures
from wattserve.runtime.power.remote import WorkerPower
from wattserve.seam import (
    Action,
    ActuationLog,
    ActuationRefused,
    BudgetSignal,
    ClusterInfo,
    ClusterState,
    InstanceState,
    SetClock,
    SetPowerCap,
    StepSignal,
)

CAP_SETTLE_S = 0.3


class FleetBackend:
    def __init__(self, endpoints: EndpointPool, power: WorkerPower, budget: BudgetSignal, slo_ttft_s: float | None,
                 slo_tpot_s: float | None, model: str = "external", target: StepSignal | None = None,
                 loop: asyncio.AbstractEventLoop | None = None, log: ActuationLog | None = None) -> None:
        self.endpoints = endpoints
        self.spec: EngineSpec = endpoints.spec
        self.power = power
        self.budget = budget
        self.target = target
        self.slo_ttft_s = slo_ttft_s
        self.slo_tpot_s = slo_tpot_s
        self.loop = loop or asyncio.get_event_loop()
        self.cap_settle_s = CAP_SETTLE_S
        self.log = log if log is not None else ActuationLog()
        self._t0 = time.monotonic()
        n, m = len(endpoints.endpoints), power.count()
        per = m // n
        self.instance_gpus = tuple(tuple(range(i * per, (i + 1) * per)) for i in range(n))
        self._info = self._read_info(model)

    def now(self) -> float:
        return time.monotonic() - self._t0

    def call_at(self, t: float, fn: Callable[[], None]) -> None:
        self.loop.call_later(max(0.0, t - self.now()), fn)

    def done(self) -> bool:
        return False

    def info(self) -> ClusterInfo:
        return self._info

    def _read_info(self, model: str) -> ClusterInfo:
        p = self.power
        clocks = tuple(sorted(p.supported_clocks_mhz(0))) or (int(p.clock_mhz(0)),)
        lo, hi = p.cap_range_w(0)
        return ClusterInfo(gpu=gpu_key(p.name(0)) or p.name(0), model=model, tp=len(self.instance_gpus[0]), clocks_mhz=clocks,
                           cap_min_w=lo, cap_max_w=hi, instance_gpus=self.instance_gpus)

    def observe(self) -> ClusterState:
        """From the latest scrape of every endpoint and reading of every agent (as stale as the
        poll period); no side effects beyond logging agent failures."""
        self._log_failures()
        p = self.power
        top = self._info.clock_max_mhz
        iid_of = {g: i for i, gs in enumerate(self.instance_gpus) for g in gs}
        gpus = [gpu_state(p, g, iid_of[g], top, p.locked_clock_mhz(g)) for g in range(p.count())]
        insts = []
        for i, e in enumerate(self.endpoints.endpoints):
            r = e.reading
            insts.append(InstanceState(
                iid=i, role=e.role, switching_to=None, gpus=self.instance_gpus[i],
                waiting=r.waiting if r else 0, waiting_tokens=0, prefilling=0, running=r.running if r else 0,
                kv_usage=min(1.0, max(0.0, r.kv_usage)) if r else 0.0, max_seqs=0,
                ttft_p90_s=e.window.ttft_p90_s(), tpot_p90_s=e.window.tpot_p90_s(), oldest_wait_s=0.0,
                prompt_tokens=r.prompt_tokens if r else 0, output_tokens=r.output_tokens if r else 0,
                completed=r.completed if r else 0, alive=e.alive))
        now = self.now()
        return ClusterState(now, self.budget.at(now), self.slo_ttft_s, self.slo_tpot_s, tuple(insts), tuple(gpus),
                            target_tok_s=self.target.at(now) if self.target is not None else None)

    def apply(self, action: Action) -> float:
        self._log_failures()
        now = self.now()
        try:
            if isinstance(action, SetPowerCap):
                self.power.set_power_cap(action.gpu, action.watts)
                return now + self.cap_settle_s
            if isinstance(action, SetClock):
                self.power.lock_clock(action.gpu, action.mhz)
                return now
        except Exception as e:  # noqa: BLE001 - typed power errors and lost agents alike refuse the action
            raise ActuationRefused(str(e)) from None
        reason = self.spec.refusals.get(type(action).__name__, f"{self.spec.name} cannot take {action!r}")
        raise ActuationRefused(reason)

    def _log_failures(self) -> None:
        """Ops an agent refused or never answered, in the guard's log as "failed"."""
        log_failures(self.power, self.log, self.now(), lambda g: "")
