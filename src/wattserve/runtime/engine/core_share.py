"""A process's share of a CPU's cores, the CPU form of RAPID-Serve's compute-unit masks
("RAPID-Serve: Resource-efficient and Accelerated P/D Intra-GPU Disaggregation", arXiv 2601.11822):
the cores its threads may run on and as many intra-op threads as cores."""

from __future__ import annotations

import contextlib
import os

import torch


def pin(cores: tuple[int, ...]) -> bool:
    """Restrict every thread of this process to `cores`: `os.sched_setaffinity(0, ...)` moves only the
    calling thread, and torch's worker threads already exist. False when the OS refuses."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(0, cores)
    except (OSError, ValueError):
        return False
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError, ValueError):
                os.sched_setaffinity(int(tid), cores)
    return True


def apply_share(threads: int, cores: tuple[int, ...]) -> bool:
    """One process's compute share on a CPU (RAPID-Serve's CU mask, arXiv 2601.11822): its cores,
    then as many intra-op threads as cores, so new threads start inside the mask."""
    pinned = pin(cores)
    torch.set_num_threads(max(1, threads))
    return pinned


def affinity() -> tuple[int, ...]:
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))
