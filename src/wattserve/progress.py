"""A terminal progress bar for runs longer than a second (stderr, TTY only).

Progress counts finished requests (completed or failed), not arrivals: the last arrival can come long
before the backlog drains, and a bar driven by arrival time would sit at 100% while the run goes on."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def progress_bar(total_requests: int, finished: Callable[[], int], label: str = "simulating",
                 delay_s: float = 1.0, stream: TextIO | None = None) -> tuple[
        Callable[[float], None], Callable[[], None]]:
    """`update(sim_t)` (the simulator's progress callback) and `close()`; `finished()` says how many
    requests are done. Draws only on a terminal, after `delay_s` of wall time."""
    start = time.perf_counter()
    shown = [False]
    out = sys.stderr if stream is None else stream
    enabled = out.isatty() and total_requests > 0

    def update(sim_t: float) -> None:
        if not enabled:
            return
        elapsed = time.perf_counter() - start
        if elapsed < delay_s:
            return
        done = finished()
        frac = min(1.0, done / total_requests)
        bar = "#" * int(frac * 30)
        out.write(f"\r{label} [{bar:<30}] {frac:5.1%}  {done:,}/{total_requests:,} requests  "
                  f"sim t={sim_t:,.0f}s  wall {elapsed:.1f}s")
        out.flush()
        shown[0] = True

    def close() -> None:
        if shown[0]:
            out.write("\r" + " " * 100 + "\r")
            out.flush()

    return update, close
