"""A minimal discrete-event core in the spirit of SimPy: a clock and a heap of callbacks.

Callbacks rather than generator processes, because a process switch costs several times a plain
call and the simulator's budget is a few microseconds per event. Cancellation is lazy: an owner
keeps a version number and ignores callbacks scheduled under an older one. `stop()` ends the run
at the current time and drops what is still queued (a cluster stops when its workload is done).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

_ROUNDING = 1e-9


class EventLoop:
    __slots__ = ("now", "_heap", "_seq", "processed", "stopped")

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._seq = 0
        self.processed = 0
        self.stopped = False

    def at(self, t: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        """Call fn(arg) at time t. A time in the past is refused (ValueError); one within floating-point
        rounding of now (a closed-form end computed from an earlier origin) is taken as now."""
        if self.stopped:
            return
        if t < self.now:
            if self.now - t > _ROUNDING * (1.0 + self.now):
                raise ValueError(f"event time {t!r} s is before the current time {self.now!r} s")
            t = self.now
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, fn, arg))

    def run(self, until: float | None = None, progress: Callable[[float], None] | None = None) -> None:
        heap = self._heap
        pop = heapq.heappop
        n = 0
        while heap:
            if until is not None and heap[0][0] > until:
                break
            t, _, fn, arg = pop(heap)
            self.now = t
            fn(arg)
            n += 1
            if progress is not None and not n & 0x1FFF:
                progress(t)
        self.processed += n

    def stop(self) -> None:
        self.stopped = True
        self._heap.clear()

    def pending(self) -> int:
        return len(self._heap)
