"""A terminal progress bar for runs longer than a second (stderr, TTY only)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def progress_bar(total_sim_s: float, label: str = "simulating", delay_s: float = 1.0) -> tuple[
        Callable[[float], None], Callable[[], None]]:
    start = time.perf_counter()
    shown = [False]
    stream = sys.stderr
    enabled = stream.isatty() and total_sim_s > 0

    def update(sim_t: float) -> None:
        if not enabled:
            return
        elapsed = time.perf_counter() - start
        if elapsed < delay_s:
            return
        frac = min(1.0, sim_t / total_sim_s)
        bar = "#" * int(frac * 30)
        stream.write(f"\r{label} [{bar:<30}] {frac:5.1%}  sim t={sim_t:,.0f}s  wall {elapsed:.1f}s")
        stream.flush()
        shown[0] = True

    def close() -> None:
        if shown[0]:
            stream.write("\r" + " " * 79 + "\r")
            stream.flush()

    return update, close
