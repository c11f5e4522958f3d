"""Run a sweep's cells in a process pool (or in this process with one job), results in input order,
with a progress callback per finished cell: the one loop every comparison shares."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], cells: Sequence[T], jobs: int | None,
                progress: Callable[[int, int], None] | None = None, chunksize: int = 1) -> list[R]:
    """`fn` over `cells`: in a pool of `jobs` processes (default: every core), or here when one job
    or one cell is asked for (no pool start-up cost)."""
    workers = jobs or max(1, os.cpu_count() or 1)
    out: list[R] = []
    if workers == 1 or len(cells) <= 1:
        for i, c in enumerate(cells):
            out.append(fn(c))
            if progress:
                progress(i + 1, len(cells))
        return out
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, r in enumerate(pool.map(fn, cells, chunksize=chunksize)):
            out.append(r)
            if progress:
                progress(i + 1, len(cells))
    return out
