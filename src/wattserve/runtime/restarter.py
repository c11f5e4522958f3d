"""Restarting crashed workers (`serve --restart-workers`)."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import replace

from wattserve.runtime.launcher import WorkerLauncher
from wattserve.runtime.router import Router
from wattserve.runtime.worker_client import WorkerClient
from wattserve.runtime.worker_spec import WorkerSpec


class Restarter:
    """`--restart-workers`: a crashed worker is started again in the role it had, weights reloaded,
    and put back in service. A worker that keeps crashing (MAX_RESTARTS within WINDOW_S) is left
    down, so a fault that kills it at start-up does not loop forever."""

    MAX_RESTARTS = 3
    WINDOW_S = 60.0

    def __init__(self, router: Router, specs: list[WorkerSpec], launcher: WorkerLauncher) -> None:
        self.router = router
        self.specs = specs
        self.launcher = launcher
        self.history: dict[int, list[float]] = {}
        self.tasks: set[asyncio.Task] = set()

    def __call__(self, w: WorkerClient) -> None:
        now = time.monotonic()
        recent = [t for t in self.history.get(w.wid, []) if now - t < self.WINDOW_S]
        if len(recent) >= self.MAX_RESTARTS:
            print(f"wattserve serve: worker {w.wid} crashed {len(recent)} times in {self.WINDOW_S:.0f} s; "
                  "left down", file=sys.stderr, flush=True)
            return
        self.history[w.wid] = [*recent, now]
        task = asyncio.get_running_loop().create_task(self._restart(w))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _restart(self, w: WorkerClient) -> None:
        spec = replace(self.specs[w.wid], role=w.role)
        try:
            new = await asyncio.get_running_loop().run_in_executor(None, self.launcher.launch, spec)
            await self.router.replace(WorkerClient(w.wid, w.role, new.host, new.port, new.proc))
        except Exception as e:  # noqa: BLE001 - a failed restart leaves the worker down, said once
            print(f"wattserve serve: worker {w.wid} could not be restarted: {e}", file=sys.stderr, flush=True)
            return
        print(f"wattserve serve: worker {w.wid} ({w.role}) restarted, pid {new.proc.pid}", file=sys.stderr, flush=True)
