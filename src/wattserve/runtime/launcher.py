"""How worker processes come to exist: the seam a multi-node launcher (Ray, ssh, a batch scheduler)
plugs into.

A launcher starts one worker from its `WorkerSpec` and returns where the router reaches it (host
and port) and a handle on the process with multiprocessing's interface (pid, sentinel, exitcode,
is_alive, join, kill), which the router watches for exits. Two launchers:
- `ProcessLauncher`: a multiprocessing child of the server (spawn), its port sent back over a pipe.
- `CommandLauncher`: a command line (`python -m wattserve.runtime.worker_entry SPEC_JSON`) that
  prints its port on its first stdout line: the shape a remote launcher takes, where the command
  runs through ssh, srun or a Ray actor and the spec travels as JSON. Run locally, it is a plain
  subprocess.
A worker binds `WorkerSpec.host` (0.0.0.0 makes it reachable from other hosts); the router connects
to the launcher's advertised address.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import select
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Protocol

from wattserve.errors import UsageError
from wattserve.runtime.address import advertised
from wattserve.runtime.worker_entry import run_worker
from wattserve.runtime.worker_spec import WorkerSpec, spec_to_json


@dataclass(frozen=True)
class LaunchedWorker:
    host: str
    """The address the router connects to."""
    port: int
    proc: Any
    """multiprocessing-like: pid, sentinel, exitcode, is_alive(), join(timeout), kill()."""


class WorkerLauncher(Protocol):
    def launch(self, spec: WorkerSpec, timeout_s: float = 120.0) -> LaunchedWorker: ...


def spawn_worker(spec: WorkerSpec, timeout_s: float = 120.0) -> tuple[mp.process.BaseProcess, int]:
    """Start a worker process; returns it and the port it listens on. A concurrent worker is not
    daemonic, because it starts a prefill process of its own (a daemonic process may not have
    children); the server stops it as it stops any worker."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=run_worker, args=(spec, child), name=f"wattserve-worker-{spec.wid}",
                       daemon=spec.role != "concurrent")
    proc.start()
    child.close()
    if not parent.poll(timeout_s):
        proc.kill()
        raise RuntimeError(f"worker {spec.wid} did not start within {timeout_s:.0f} s")
    msg = parent.recv()
    if "error" in msg:
        proc.join(5)
        raise UsageError(f"worker {spec.wid}: {msg['error']}")
    return proc, int(msg["port"])


class ProcessLauncher:
    def launch(self, spec: WorkerSpec, timeout_s: float = 120.0) -> LaunchedWorker:
        proc, port = spawn_worker(spec, timeout_s)
        return LaunchedWorker(advertised(spec.host), port, proc)


class PopenProcess:
    """A subprocess.Popen with multiprocessing.Process's interface; its sentinel is a pidfd, readable
    once the process has exited (Linux 5.3+), so the router watches it as it watches a child."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.sentinel = os.pidfd_open(popen.pid)

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()


class CommandLauncher:
    def __init__(self, prefix: tuple[str, ...] = ()) -> None:
        """`prefix` goes before the Python command (e.g. ("ssh", "node7") or ("srun", "-N1")); empty
        runs the worker here."""
        self.prefix = prefix

    def launch(self, spec: WorkerSpec, timeout_s: float = 120.0) -> LaunchedWorker:
        cmd = [*self.prefix, sys.executable, "-m", "wattserve.runtime.worker_entry", spec_to_json(spec)]
        popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert popen.stdout is not None
        proc = PopenProcess(popen)
        ready, _, _ = select.select([popen.stdout], [], [], timeout_s)
        line = popen.stdout.readline() if ready else ""
        if not line:
            proc.kill()
            proc.join(5)
            raise RuntimeError(f"worker {spec.wid} did not report its port within {timeout_s:.0f} s "
                               f"(exit code {popen.poll()})")
        msg = json.loads(line)
        if "error" in msg:
            proc.join(5)
            raise UsageError(f"worker {spec.wid}: {msg['error']}")
        popen.stdout.close()
        return LaunchedWorker(advertised(spec.host), int(msg["port"]), proc)
