"""The simulator behind the control seam: observations from simulated state, actions through the
cluster's actuators (with their modelled delays)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from wattserve.errors import UsageError
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
from wattserve.sim.cluster import CAP_SETTLE_S, RECONFIG_S, Cluster

WINDOW_S = 5.0


class SimBackend:
    def __init__(self, cluster: Cluster, budget: BudgetSignal, slo_ttft_s: float | None, slo_tpot_s: float | None,
                 cap_settle_s: float = CAP_SETTLE_S, reconfig_s: float = RECONFIG_S, migrate: bool = True,
                 window_s: float = WINDOW_S) -> None:
        self.cluster = cluster
        self.budget = budget
        self.slo_ttft_s = slo_ttft_s
        self.slo_tpot_s = slo_tpot_s
        self.cap_settle_s = cap_settle_s
        self.reconfig_s = reconfig_s
        self.migrate = migrate
        self.window_s = window_s
        self._last_obs_t = 0.0
        self._last_energy = [0.0] * len(cluster.gpus)

    def now(self) -> float:
        return self.cluster.loop.now

    def call_at(self, t: float, fn: Callable[[], None]) -> None:
        self.cluster.loop.at(t, lambda _: fn())

    def done(self) -> bool:
        return self.cluster.done()

    def _p90(self, window: deque[tuple[float, float]], now: float) -> tuple[float | None, int]:
        while window and window[0][0] < now - self.window_s:
            window.popleft()
        if not window:
            return None, 0
        return float(np.percentile([v for _, v in window], 90)), len(window)

    def observe(self) -> ClusterState:
        c = self.cluster
        now = self.now()
        dt = now - self._last_obs_t
        gpus = []
        for g in c.gpus:
            energy = g.energy_j + g.power_w * (now - g._t)
            avg = (energy - self._last_energy[g.index]) / dt if dt > 0 else g.power_w
            self._last_energy[g.index] = energy
            inst = c._instance_of_gpu[g.index]
            gpus.append(GpuState(g.index, inst.iid, g.cap_w, g.cap_target_w, g.spec.cap_min_w, g.spec.cap_max_w,
                                 g.clock_mhz, g.spec.clock_max_mhz, g.locked_clock_mhz, avg,
                                 inst.throttled and inst.busy))
        self._last_obs_t = now
        insts = []
        for i in c.instances:
            ttft, n1 = self._p90(i.recent_ttft, now)
            tpot, n2 = self._p90(i.recent_tpot, now)
            oldest = now - i.waiting[0].arrival if i.waiting else 0.0
            if i.active:
                oldest = max(oldest, now - min(r.arrival for r in i.active))
            insts.append(InstanceState(
                iid=i.iid, role=i.role, switching_to=i.switching_to, gpus=tuple(g.index for g in i.gpus),
                waiting=len(i.waiting) + len(i.incoming) + len(i.pending_join),
                waiting_tokens=i.pending_prefill_tokens, running=len(i.running),
                kv_usage=i.kv_live_blocks / i.kv_blocks if i.kv_blocks else 0.0, max_seqs=i.max_seqs,
                ttft_p90_s=ttft, tpot_p90_s=tpot, recent_completions=n1 + n2, oldest_wait_s=oldest))
        return ClusterState(now, self.budget.at(now), self.slo_ttft_s, self.slo_tpot_s, tuple(insts), tuple(gpus))

    def apply(self, action: Action) -> float:
        c = self.cluster
        now = self.now()
        try:
            if isinstance(action, SetPowerCap):
                return c.set_power_cap(action.gpu, action.watts, self.cap_settle_s)
            if isinstance(action, SetClock):
                return c.set_clock(action.gpu, action.mhz)
            if isinstance(action, SetRole):
                c.set_role(action.instance, action.role, self.reconfig_s, self.migrate)
                return now + self.reconfig_s
            if isinstance(action, SetBatchLimit):
                if action.max_seqs < 1:
                    raise ActuationRefused(f"max_seqs {action.max_seqs} must be >= 1")
                inst = c.instances[action.instance]
                inst.max_seqs = action.max_seqs
                inst.poke()
                return now
            if isinstance(action, SetComputeShare):
                raise ActuationRefused("intra-GPU compute shares are not modelled by this back end yet")
        except (UsageError, IndexError) as e:
            raise ActuationRefused(str(e)) from None
        raise ActuationRefused(f"unknown action {action!r}")
