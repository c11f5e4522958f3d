"""The simulator behind the control seam: observations from simulated state, actions through the
cluster's actuators (with their modelled delays). Observing has no side effects: counters are read
as of the observation's instant, including the part of a closed-form decode run already done."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from wattserve.errors import UsageError
from wattserve.seam import (
    Action,
    ActuationRefused,
    BudgetSignal,
    ClusterInfo,
    ClusterState,
    GpuState,
    InstanceState,
    SetBatchLimit,
    SetClock,
    SetComputeShare,
    SetPowerCap,
    SetRole,
    SetStepTarget,
    StepSignal,
)
from wattserve.seam.governor import target_of
from wattserve.sim.cluster import CAP_SETTLE_S, RECONFIG_S, Cluster

WINDOW_S = 5.0


class SimBackend:
    def __init__(self, cluster: Cluster, budget: BudgetSignal, slo_ttft_s: float | None, slo_tpot_s: float | None,
                 cap_settle_s: float = CAP_SETTLE_S, reconfig_s: float = RECONFIG_S, migrate: bool = True,
                 window_s: float = WINDOW_S, target: StepSignal | None = None) -> None:
        self.cluster = cluster
        self.budget = budget
        self.target = target
        """The operator's throughput target over time (output tok/s), shown to controllers as
        ClusterState.target_tok_s; None: the run has none."""
        self.slo_ttft_s = slo_ttft_s
        self.slo_tpot_s = slo_tpot_s
        self.cap_settle_s = cap_settle_s
        self.reconfig_s = reconfig_s
        self.migrate = migrate
        self.window_s = window_s

    def now(self) -> float:
        return self.cluster.loop.now

    def call_at(self, t: float, fn: Callable[[], None]) -> None:
        self.cluster.loop.at(t, lambda _: fn())

    def done(self) -> bool:
        return self.cluster.done()

    def info(self) -> ClusterInfo:
        c = self.cluster
        g = c.gpu_spec
        return ClusterInfo(gpu=c.spec.gpu, model=c.spec.model, tp=c.spec.tp, clocks_mhz=tuple(g.clocks),
                           cap_min_w=g.cap_min_w, cap_max_w=g.cap_max_w,
                           instance_gpus=tuple(tuple(x.index for x in i.gpus) for i in c.instances))

    def _p90(self, window: deque[tuple[float, float]], now: float) -> float | None:
        cut = now - self.window_s
        vals = []
        for t, v in reversed(window):
            if t < cut:
                break
            vals.append(v)
        return float(np.percentile(vals, 90)) if vals else None

    def observe(self) -> ClusterState:
        """Reads the simulated state and changes nothing, so any number of controllers may observe."""
        c = self.cluster
        now = self.now()
        gpus = []
        for inst in c.instances:
            busy_throttled = bool(inst.throttled and inst.busy)
            for g in inst.gpus:
                gpus.append(GpuState(
                    index=g.index, instance=inst.iid, cap_w=g.cap_w, cap_target_w=g.cap_target_w,
                    cap_min_w=g.spec.cap_min_w, cap_max_w=g.spec.cap_max_w, clock_mhz=int(g.clock_mhz),
                    clock_max_mhz=g.spec.clock_max_mhz, locked_clock_mhz=g.locked_clock_mhz, power_w=g.power_w,
                    energy_j=g.energy_at(now), throttled=busy_throttled))
        gpus.sort(key=lambda s: s.index)
        insts = []
        for i in c.instances:
            unstarted = [r.arrival for r in i.waiting if r.t_first_token < 0]
            unstarted += [r.arrival for r in i.active if r.t_first_token < 0]
            insts.append(InstanceState(
                iid=i.iid, role=i.role, switching_to=i.switching_to, gpus=tuple(g.index for g in i.gpus),
                waiting=len(i.waiting) + len(i.incoming) + len(i.pending_join),
                waiting_tokens=i.pending_prefill_tokens, prefilling=len(i.active), running=len(i.running),
                kv_usage=i.kv_live_blocks / i.kv_blocks if i.kv_blocks else 0.0, max_seqs=i.max_seqs,
                ttft_p90_s=self._p90(i.recent_ttft, now), tpot_p90_s=self._p90(i.recent_tpot, now),
                oldest_wait_s=now - min(unstarted) if unstarted else 0.0,
                prompt_tokens=i.prompt_tokens, output_tokens=i.output_tokens_at(now), completed=i.completed,
                step_target=target_of(i.governor)))
        return ClusterState(now, self.budget.at(now), self.slo_ttft_s, self.slo_tpot_s, tuple(insts), tuple(gpus),
                            target_tok_s=self.target.at(now) if self.target is not None else None)

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
                c.set_batch_limit(action.instance, action.max_seqs)
                return now
            if isinstance(action, SetComputeShare):
                c.set_compute_share(action.instance, action.phase, action.fraction)
                return now
            if isinstance(action, SetStepTarget):
                c.set_step_target(action.instance, action.share)
                return now
        except (UsageError, IndexError) as e:
            raise ActuationRefused(str(e)) from None
        raise ActuationRefused(f"unknown action {action!r}")
