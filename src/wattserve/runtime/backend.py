"""The runtime behind the control seam: the same controllers and BudgetGuard that drive the
simulator drive live workers and GPUs. Each worker is one instance on one GPU (index = worker id).

The power agent is any GpuPower: a node-level agent (NVML, AMD SMI or modelled, over all GPUs) or
`power.remote.WorkerPower`, whose ops run in the workers and may fail after `apply` returned. Such
failures (`take_failures`) are written to the actuation log as "failed" entries with the worker's
message, the same log the BudgetGuard writes (pass it as `log`), so a refused cap is never silent."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

import numpy as np

from wattserve.catalog.gpus import GPUS, GpuSpec, gpu_key
from wattserve.errors import UsageError
from wattserve.runtime.power.base import GpuPower
from wattserve.runtime.power.gpu_view import gpu_state, log_failures
from wattserve.runtime.router import Router
from wattserve.seam import (
    Action,
    ActuationLog,
    ActuationRefused,
    BudgetSignal,
    ClusterInfo,
    ClusterState,
    InstanceState,
    SetBatchLimit,
    SetClock,
    SetComputeShare,
    SetPowerCap,
    SetRole,
    SetStepTarget,
    StepSignal,
)

CAP_SETTLE_S = 0.3
WINDOW_S = 5.0


class RuntimeBackend:
    def __init__(self, router: Router, agent: GpuPower, budget: BudgetSignal, slo_ttft_s: float | None,
                 slo_tpot_s: float | None, loop: asyncio.AbstractEventLoop | None = None,
                 cap_settle_s: float = CAP_SETTLE_S, log: ActuationLog | None = None,
                 target: StepSignal | None = None) -> None:
        self.router = router
        self.agent = agent
        self.budget = budget
        self.target = target
        """The operator's throughput target over time (output tok/s; time in seconds since this back
        end started, as `budget`), shown to controllers as ClusterState.target_tok_s."""
        self.slo_ttft_s = slo_ttft_s
        self.slo_tpot_s = slo_tpot_s
        self.loop = loop or asyncio.get_event_loop()
        self.cap_settle_s = getattr(agent, "settle_s", cap_settle_s)
        self._t0 = time.monotonic()
        self._locked: dict[int, int | None] = {}
        self.log = log if log is not None else ActuationLog()
        """Where failures reported after `apply` returned are written (share the guard's)."""
        self._info = self._read_info()

    def now(self) -> float:
        return time.monotonic() - self._t0

    def call_at(self, t: float, fn: Callable[[], None]) -> None:
        self.loop.call_later(max(0.0, t - self.now()), fn)

    def done(self) -> bool:
        return False

    def offload(self, fn: Callable[[], list[Action]], then: Callable[[list[Action]], None]) -> None:
        """Run a controller's search (`fn`) in a thread, so the API on this event loop keeps serving
        while it runs, and hand its actions to `then` on the loop. A search that fails is reported
        on stderr and decides nothing."""
        def done(f: asyncio.Future[list[Action]]) -> None:
            if f.cancelled():
                return
            err = f.exception()
            if err is not None:
                print(f"wattserve serve: the policy's decision failed ({type(err).__name__}: {err}); "
                      "it decides again next period", file=sys.stderr, flush=True)
            then([] if err is not None else f.result())

        self.loop.run_in_executor(None, fn).add_done_callback(done)

    def info(self) -> ClusterInfo:
        return self._info

    def _read_info(self) -> ClusterInfo:
        """GPU kind and clock table from the power agent: a modelled agent's catalog GPU (directly,
        or by the name a worker reports); a real agent's device name. Clocks: the agent's supported
        clocks if it reports them (`supported_clocks_mhz`), else the catalog entry of that name,
        else the clock it runs at now."""
        a = self.agent
        key = gpu_key(a.name(0), driver_names=False)
        spec: GpuSpec | None = getattr(a, "spec", None) or (GPUS[key] if key else None)
        gpu = a.name(0) if spec is None else next((k for k, v in GPUS.items() if v is spec), spec.name)
        read = getattr(a, "supported_clocks_mhz", None)
        table = [int(c) for c in read(0)] if read is not None else []
        if table:
            clocks = tuple(sorted(table))
        elif spec is not None:
            clocks = tuple(spec.clocks)
        else:
            clocks = (int(a.clock_mhz(0)),)
        lo, hi = a.cap_range_w(0)
        return ClusterInfo(gpu=gpu, model=self.router.model, tp=1, clocks_mhz=clocks, cap_min_w=lo, cap_max_w=hi,
                           instance_gpus=tuple((w.wid,) for w in self.router.workers))

    def observe(self) -> ClusterState:
        """Reads the power agent, the router and the workers' latest stats (sent every 0.25 s, so
        worker-side fields are that stale); it keeps no per-observer state."""
        self._log_failures()
        r = self.router
        now_abs = time.monotonic()
        top = self._info.clock_max_mhz
        gpus = [gpu_state(self.agent, i, w.wid, top, self._locked.get(i)) for i, w in enumerate(r.workers)]
        recent = [x for x in r.recent if x[0] >= now_abs - WINDOW_S]
        insts = []
        for w in r.workers:
            ttft = [v for _, k, wid, v in recent if k == "ttft" and wid == w.wid]
            tpot = [v for _, k, wid, v in recent if k == "tpot" and wid == w.wid]
            s = w.stats
            kv_total = int(s.get("kv_blocks", 0))
            insts.append(InstanceState(
                iid=w.wid, role=w.role, switching_to=w.switching_to, gpus=(w.wid,),
                waiting=int(s.get("waiting", 0)), waiting_tokens=int(s.get("waiting_tokens", 0)),
                prefilling=int(s.get("prefilling", 0)), running=int(s.get("decoding", s.get("running", 0))),
                kv_usage=min(1.0, int(s.get("kv_blocks_used", 0)) / kv_total) if kv_total else 0.0,
                max_seqs=int(s.get("max_num_seqs", 0)),
                ttft_p90_s=float(np.percentile(ttft, 90)) if ttft else None,
                tpot_p90_s=float(np.percentile(tpot, 90)) if tpot else None,
                oldest_wait_s=r.oldest_wait_s(w, now_abs), prompt_tokens=int(s.get("prompt_tokens", 0)),
                output_tokens=w.output_tokens, completed=w.completed, alive=w.alive,
                step_target=None if s.get("step_target") is None else float(s["step_target"])))
        now = now_abs - self._t0
        return ClusterState(now, self.budget.at(now), self.slo_ttft_s, self.slo_tpot_s, tuple(insts), tuple(gpus),
                            target_tok_s=self.target.at(now) if self.target is not None else None)

    def apply(self, action: Action) -> float:
        self._log_failures()
        now = self.now()
        try:
            if isinstance(action, SetPowerCap):
                self.agent.set_power_cap(action.gpu, action.watts)
                return now + self.cap_settle_s
            if isinstance(action, SetClock):
                self.agent.lock_clock(action.gpu, action.mhz)
                self._locked[action.gpu] = action.mhz
                return now
            if isinstance(action, SetRole):
                self.router.set_role(action.instance, action.role)
                return now
            if isinstance(action, SetBatchLimit):
                self.router.set_batch_limit(action.instance, action.max_seqs)
                return now
            if isinstance(action, SetComputeShare):
                self.router.set_compute_share(action.instance, action.phase, action.fraction)
                return now
            if isinstance(action, SetStepTarget):
                self.router.set_step_target(action.instance, action.share)
                return now
        except UsageError as e:
            raise ActuationRefused(str(e)) from None
        raise ActuationRefused(f"unknown action {action!r}")

    def _log_failures(self) -> None:
        """Write ops that failed in a worker to the log ("failed", with the worker's message); a
        failed clock lock also drops the lock this back end believed in force."""
        read = getattr(self.agent, "locked_clock_mhz", None)
        for g in log_failures(self.agent, self.log, self.now(), lambda g: f"worker {g}: "):
            self._locked[g] = read(g) if read is not None else None
