"""Engine workers as Ray actors (`serve --launcher ray`): the WorkerLauncher for a deployment larger
than one machine, as vLLM's Ray executor places its workers.

Each worker is one actor that holds its device through Ray's resources (one GPU on CUDA, its
threads' CPUs otherwise) in a placement group with one bundle per worker, packed onto as few nodes
as fit or spread over as many as possible (https://docs.ray.io/en/latest/ray-core/scheduling/
placement-group.html). The actor runs the same `worker_main` a local worker runs, on a thread of its
own process, bound to its node's routable address; the router connects to it there as to any
worker, and KV crosses between nodes over the tcp transport, peer to peer (the decode worker pulls
from the prefill worker's KV store). The worker's power agent lives in the actor, so each node's
caps and clocks are set where its GPU is.

Faults: the actor is the worker process. When it dies, its sockets close and the router takes the
worker down as it does a dead local process (no pidfd to watch across nodes); `RayProcess` answers
the multiprocessing-like calls the router and the restarter make (is_alive, join, kill, exitcode)
through Ray.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import replace
from typing import Any

from wattserve.errors import UsageError
from wattserve.runtime.launcher import LaunchedWorker
from wattserve.runtime.ray_cluster import start_ray
from wattserve.runtime.worker import worker_main
from wattserve.runtime.worker_spec import WorkerSpec, spec_from_json, spec_to_json

STRATEGIES = {"pack": "PACK", "spread": "SPREAD"}


class _QueueReady:
    """worker_main's `ready` end, handing its first message to the actor's `start` call."""

    def __init__(self, q: queue.Queue[dict[str, Any]]) -> None:
        self.q = q

    def send(self, msg: dict[str, Any]) -> None:
        self.q.put(msg)

    def close(self) -> None:
        return None


class WorkerActor:
    """The body of a worker actor (wrapped by ray.remote at launch, so importing this module never
    needs Ray)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, spec_json: str, timeout_s: float) -> dict[str, Any]:
        import ray

        host = ray.util.get_node_ip_address()
        spec = replace(spec_from_json(spec_json), host=host)
        q: queue.Queue[dict[str, Any]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(spec, _QueueReady(q)), daemon=True,
                                       name=f"wattserve-worker-{spec.wid}")
        self.thread.start()
        try:
            msg = q.get(timeout=timeout_s)
        except queue.Empty:
            return {"error": f"did not report its port within {timeout_s:.0f} s"}
        return {**msg, "host": host, "pid": os.getpid()}

    def _run(self, spec: WorkerSpec, ready: _QueueReady) -> None:
        try:
            worker_main(spec, ready)
        finally:
            self.done.set()

    def finished(self) -> bool:
        return self.done.is_set()


class RayProcess:
    """A worker actor with multiprocessing.Process's interface, for the router and the restarter.
    It has no sentinel: the router learns of a death from the worker's socket closing."""

    sentinel = None

    def __init__(self, ray: Any, actor: Any, pid: int) -> None:
        self.ray = ray
        self.actor = actor
        self.pid = pid
        self._exit: int | None = None

    def _poll(self, timeout_s: float = 2.0) -> None:
        if self._exit is not None:
            return
        try:
            if self.ray.get(self.actor.finished.remote(), timeout=timeout_s):
                self._exit = 0
                self.ray.kill(self.actor, no_restart=True)
        except self.ray.exceptions.GetTimeoutError:
            return
        except self.ray.exceptions.RayActorError:
            self._exit = 1

    @property
    def exitcode(self) -> int | None:
        self._poll()
        return self._exit

    def is_alive(self) -> bool:
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        end = None if timeout is None else time.monotonic() + timeout
        while self.is_alive() and (end is None or time.monotonic() < end):
            time.sleep(0.1)

    def kill(self) -> None:
        if self._exit is None:
            self.ray.kill(self.actor, no_restart=True)
            self._exit = -9


class RayLauncher:
    """Workers of `specs` as actors in one placement group (`placement`: pack or spread). `address`
    joins a running cluster; None starts a local Ray instance with enough CPUs for the workers,
    stopped on close."""

    def __init__(self, specs: list[WorkerSpec], placement: str = "pack", address: str | None = None) -> None:
        self.bundles = [{"GPU": 1.0, "CPU": 1.0} if s.engine.device.startswith("cuda") else {"CPU": float(s.threads)}
                        for s in specs]
        cpus = max(os.cpu_count() or 1, int(sum(b["CPU"] for b in self.bundles)))
        self.ray, self.owned = start_ray(address, cpus, "ray_address")
        from ray.util.placement_group import placement_group

        self.pg = placement_group(self.bundles, strategy=STRATEGIES[placement])
        if not self.pg.wait(timeout_seconds=60):
            self.close()
            raise UsageError(f"the Ray cluster cannot place {len(specs)} worker(s) {placement}ed ({self.bundles}); "
                             "allowed: a placement its nodes' CPUs and GPUs can hold", "placement")
        self.actor_cls = self.ray.remote(max_concurrency=2)(WorkerActor)

    def launch(self, spec: WorkerSpec, timeout_s: float = 120.0) -> LaunchedWorker:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        b = self.bundles[spec.wid]
        actor = self.actor_cls.options(
            num_cpus=b["CPU"], num_gpus=b.get("GPU", 0.0), name=None,
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=spec.wid),
        ).remote()
        try:
            msg = self.ray.get(actor.start.remote(spec_to_json(spec), timeout_s), timeout=timeout_s + 30)
        except (self.ray.exceptions.RayError, TimeoutError) as e:
            self.ray.kill(actor, no_restart=True)
            raise RuntimeError(f"worker {spec.wid}: its Ray actor failed to start ({type(e).__name__}: {e})") from None
        if "error" in msg:
            self.ray.kill(actor, no_restart=True)
            raise UsageError(f"worker {spec.wid}: {msg['error']}")
        return LaunchedWorker(str(msg["host"]), int(msg["port"]), RayProcess(self.ray, actor, int(msg["pid"])))

    def close(self) -> None:
        from ray.util.placement_group import remove_placement_group

        if self.ray.is_initialized():
            remove_placement_group(self.pg)
            if self.owned:
                self.ray.shutdown()
