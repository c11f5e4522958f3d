"""A minimal discrete-event core in the spirit of SimPy: a clock and a heap of callbacks.

Callbacks rather than generator processes, because a process switch costs several times a plain
call and the simulator's budget is a few microseconds per event. Cancellation is lazy: an owner
keeps a version number and ignores callbacks scheduled under an older one.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


class EventLoop:
    __slots__ = ("now", "_heap", "_seq", "processed")

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._seq = 0
        self.processed = 0

    def at(self, t: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        if t < self.now:
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

    def pending(self) -> int:
        return len(self._heap)
