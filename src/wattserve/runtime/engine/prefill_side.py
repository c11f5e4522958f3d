"""Where RAPID-Serve's prefill side runs beside the decode loop ("RAPID-Serve: Resource-efficient and
Accelerated P/D Intra-GPU Disaggregation", arXiv 2601.11822, runs the two phases as separate processes
on one GPU). Two forms, each driven through the same two pipes by `ConcurrentEngine`:
- `ProcessSide`: a spawned process over tensors in shared memory. On a CPU a compute share is a set
  of cores, which the OS gives per process, so the sides must be two processes.
- `ThreadSide`: a thread of the decode process. On a GPU a share is the stream a side launches into,
  and one process keeps one CUDA context, one copy of the weights and of the KV cache, with no IPC.
"""

from __future__ import annotations

import os
import threading
from multiprocessing.connection import Connection
from typing import Protocol

import torch.multiprocessing as torch_mp

from wattserve.runtime.engine.prefill_process import ChildSpec, prefill_main, thread_main


class PrefillSide(Protocol):
    kind: str
    """"process" or "thread"."""

    @property
    def pid(self) -> int | None: ...

    def alive(self) -> bool: ...

    def stop(self, timeout_s: float) -> int | None:
        """Wait for the side to end once its pipes are closed (forcing a process); its exit code, 0
        for a thread that returned, None if it is still running."""
        ...

    def describe(self) -> str:
        """What ended, for the error every pending prompt gets when the side is gone."""
        ...


class ProcessSide:
    kind = "process"

    def __init__(self, spec: ChildSpec, jobs: Connection, results: Connection) -> None:
        ctx = torch_mp.get_context("spawn")
        self._proc = ctx.Process(target=prefill_main, args=(spec, jobs, results), daemon=True, name="wattserve-prefill")
        self._proc.start()
        jobs.close()
        results.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.is_alive()

    def stop(self, timeout_s: float) -> int | None:
        self._proc.join(timeout_s)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout_s)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout_s)
        return self._proc.exitcode

    def describe(self) -> str:
        self._proc.join(1.0)
        return f"the prefill process (pid {self._proc.pid}) died, exit code {self._proc.exitcode}"


class ThreadSide:
    kind = "thread"

    def __init__(self, spec: ChildSpec, jobs: Connection, results: Connection) -> None:
        self._thread = threading.Thread(target=thread_main, args=(spec, jobs, results), daemon=True,
                                        name="wattserve-prefill")
        self._thread.start()

    @property
    def pid(self) -> int | None:
        return os.getpid()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float) -> int | None:
        self._thread.join(timeout_s)
        return None if self._thread.is_alive() else 0

    def describe(self) -> str:
        return "the prefill thread stopped (its error, if any, is on stderr)"
