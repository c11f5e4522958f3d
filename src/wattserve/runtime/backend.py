"""The runtime behind the control seam: the same controllers and BudgetGuard that drive the
simulator drive live workers and GPUs. Each worker is one instance on one GPU (index = worker id)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from wattserve.errors import UsageError
from wattserve.runtime.power.base import GpuPower
from wattserve.runtime.router import Router
from wattserve.seam import (
    Action,
    ActuationRefused,
    BudgetSignal,
    ClusterState,
    GpuState,
    InstanceState,
    SetBatchLimit,
    SetClock,
    SetComputeShare,
    SetPowerCap,
    SetRole,
)

CAP_SETTLE_S = 0.3
WINDOW_S = 5.0


class RuntimeBackend:
    def __init__(self, router: Router, agent: GpuPower, budget: BudgetSignal, slo_ttft_s: float | None,
                 slo_tpot_s: float | None, loop: asyncio.AbstractEventLoop | None = None,
                 cap_settle_s: float = CAP_SETTLE_S) -> None:
        self.router = router
        self.agent = agent
        self.budget = budget
        self.slo_ttft_s = slo_ttft_s
        self.slo_tpot_s = slo_tpot_s
        self.loop = loop or asyncio.get_event_loop()
        self.cap_settle_s = getattr(agent, "settle_s", cap_settle_s)
        self._t0 = time.monotonic()
        self._last = (self._t0, [agent.energy_j(i) for i in range(agent.count())])

    def now(self) -> float:
        return time.monotonic() - self._t0

    def call_at(self, t: float, fn: Callable[[], None]) -> None:
        self.loop.call_later(max(0.0, t - self.now()), fn)

    def done(self) -> bool:
        return False

    def observe(self) -> ClusterState:
        now_abs = time.monotonic()
        t_prev, e_prev = self._last
        energy = [self.agent.energy_j(i) for i in range(self.agent.count())]
        dt = now_abs - t_prev
        self._last = (now_abs, energy)
        gpus = []
        for i, w in enumerate(self.router.workers):
            lo, hi = self.agent.cap_range_w(i)
            in_force = getattr(self.agent, "cap_in_force_w", self.agent.power_cap_w)(i)
            gpus.append(GpuState(i, w.wid, in_force, self.agent.power_cap_w(i), lo, hi, self.agent.clock_mhz(i),
                                 0, None, (energy[i] - e_prev[i]) / dt if dt > 0 else self.agent.power_w(i),
                                 "sw_power_cap" in self.agent.throttle_reasons(i)))
        recent = [r for r in self.router.recent if r[0] >= now_abs - WINDOW_S]
        insts = []
        for w in self.router.workers:
            ttft = [v for _, k, wid, v in recent if k == "ttft" and wid == w.wid]
            tpot = [v for _, k, wid, v in recent if k == "tpot" and wid == w.wid]
            insts.append(InstanceState(
                iid=w.wid, role=w.role, switching_to=w.switching_to, gpus=(w.wid,),
                waiting=int(w.stats.get("waiting", 0)), waiting_tokens=0, running=int(w.stats.get("running", 0)),
                kv_usage=float(w.stats.get("kv_usage", 0.0)), max_seqs=int(w.stats.get("max_num_seqs", 0)),
                ttft_p90_s=float(np.percentile(ttft, 90)) if ttft else None,
                tpot_p90_s=float(np.percentile(tpot, 90)) if tpot else None,
                recent_completions=len(ttft) + len(tpot), oldest_wait_s=0.0))
        return ClusterState(self.now(), self.budget.at(self.now()), self.slo_ttft_s, self.slo_tpot_s, tuple(insts),
                            tuple(gpus))

    def apply(self, action: Action) -> float:
        now = self.now()
        try:
            if isinstance(action, SetPowerCap):
                self.agent.set_power_cap(action.gpu, action.watts)
                return now + self.cap_settle_s
            if isinstance(action, SetClock):
                self.agent.lock_clock(action.gpu, action.mhz)
                return now
            if isinstance(action, SetRole):
                self.router.set_role(action.instance, action.role)
                return now
            if isinstance(action, SetBatchLimit):
                self.router.set_batch_limit(action.instance, action.max_seqs)
                return now
            if isinstance(action, SetComputeShare):
                raise ActuationRefused("intra-GPU compute shares are not supported by the runtime yet")
        except UsageError as e:
            raise ActuationRefused(str(e)) from None
        raise ActuationRefused(f"unknown action {action!r}")
