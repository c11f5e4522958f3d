"""Where a sweep's tasks run: a local process pool (the default) or a Ray cluster, behind one
`Executor` protocol, so every comparison emits its tasks once and either runs them.

Ray (https://docs.ray.io/en/latest/ray-core/tasks.html) is what vLLM's multi-node executor and
Vidur's config explorer use to spread work over machines; it is an optional extra, imported only
when `RayExecutor` is built. Large inputs (a workload's arrays) are `share`d once: on Ray they go to
the object store (`ray.put`) and each task gets a reference, so a node never re-reads a trace from a
data path it may not have; locally `share` is the object itself. Tasks receive shared handles inside
their argument tuples, where Ray does not resolve references, so they call `resolve` on them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from wattserve.experiments.pool import ordered_map

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    name: str

    def map(self, fn: Callable[[T], R], cells: Sequence[T], progress: Callable[[int, int], None] | None = None,
            chunksize: int = 1) -> list[R]:
        """`fn` over `cells`, results in input order; `progress(done, total)` as tasks finish."""
        ...

    def share(self, obj: Any) -> Any:
        """A handle on `obj` every task can `resolve`, sent to the workers once."""
        ...

    def close(self) -> None: ...


def resolve(handle: Any) -> Any:
    """The object behind a `share`d handle (a Ray ObjectRef is fetched; anything else is itself)."""
    if type(handle).__name__ == "ObjectRef":
        import ray

        return ray.get(handle)
    return handle


class ProcessExecutor:
    """The local process pool of `jobs` workers (default: every core); one job runs here."""

    name = "process"

    def __init__(self, jobs: int | None = None) -> None:
        self.jobs = jobs

    def map(self, fn: Callable[[T], R], cells: Sequence[T], progress: Callable[[int, int], None] | None = None,
            chunksize: int = 1) -> list[R]:
        return ordered_map(fn, cells, self.jobs, progress, chunksize)

    def share(self, obj: Any) -> Any:
        return obj

    def close(self) -> None:
        return None


class RayExecutor:
    """Tasks on Ray: `address` joins a running cluster (`ray start --head` printed it, or "auto");
    None starts a local instance with `num_cpus` CPUs (default: every core) and stops it on close.
    Each task asks for one CPU, as a process-pool worker is one process."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        from wattserve.runtime.ray_cluster import start_ray

        self.ray, self.owned = start_ray(address, num_cpus or max(1, os.cpu_count() or 1), "ray_address")
        self._remote: dict[Callable[..., Any], Any] = {}

    def map(self, fn: Callable[[T], R], cells: Sequence[T], progress: Callable[[int, int], None] | None = None,
            chunksize: int = 1) -> list[R]:
        ray = self.ray
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = ray.remote(num_cpus=1, max_retries=0)(fn)
        refs = [remote.remote(c) for c in cells]
        pending, done = list(refs), 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            done += len(ready)
            if progress:
                progress(done, len(refs))
        try:
            return list(ray.get(refs))
        except ray.exceptions.RayTaskError as e:
            raise (e.cause if isinstance(e.cause, Exception) else e) from None

    def share(self, obj: Any) -> Any:
        return self.ray.put(obj)

    def close(self) -> None:
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()


def make_executor(ray: bool = False, ray_address: str | None = None, jobs: int | None = None) -> Executor:
    """The local pool, or Ray when `ray` or `ray_address` is given (jobs: the local instance's CPUs)."""
    if ray or ray_address is not None:
        return RayExecutor(ray_address, jobs)
    return ProcessExecutor(jobs)
