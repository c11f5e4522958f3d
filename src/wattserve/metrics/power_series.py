"""Cluster power over time, merged from each GPU's piecewise-constant series."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wattserve.results.sim_result import GpuTrace


def step_sum(series: Sequence[tuple[Sequence[float], Sequence[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum of step functions, each given as (change times, values from each time on).

    Simultaneous changes are applied together, so no transient sum that never existed shows up
    as a peak."""
    times = []
    deltas = []
    for t_, v_ in series:
        t = np.asarray(t_, dtype=np.float64)
        v = np.asarray(v_, dtype=np.float64)
        times.append(t)
        deltas.append(np.diff(v, prepend=0.0))
    t = np.concatenate(times)
    d = np.concatenate(deltas)
    order = np.argsort(t, kind="stable")
    t, d = t[order], d[order]
    total = np.cumsum(d)
    last_of_time = np.append(t[1:] != t[:-1], True)
    return t[last_of_time], total[last_of_time]


def cluster_power(gpus: Sequence[GpuTrace]) -> tuple[np.ndarray, np.ndarray]:
    """Change times and the cluster's total power from each time on."""
    return step_sum([(g.times, g.watts) for g in gpus])


def cluster_caps(gpus: Sequence[GpuTrace]) -> tuple[np.ndarray, np.ndarray]:
    """Change times and the sum of the caps in force (settled) from each time on."""
    return step_sum([(g.cap_times, g.cap_values) for g in gpus])


def integrate(times: np.ndarray, watts: np.ndarray, end: float) -> float:
    """Energy in joules of a step function that holds each value until the next change."""
    if len(times) == 0:
        return 0.0
    dt = np.diff(np.append(times, end))
    return float(np.dot(watts, dt))


def binned_average(times: np.ndarray, watts: np.ndarray, end: float, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact average power per time bin (energy in the bin / bin width), for plotting."""
    edges = np.linspace(0.0, end, bins + 1)
    seg_end = np.append(times[1:], end)
    cum = np.concatenate([[0.0], np.cumsum(watts * (seg_end - times))])
    seg_start = np.append(times, end)

    def energy_until(x: np.ndarray) -> np.ndarray:
        i = np.clip(np.searchsorted(seg_start, x, side="right") - 1, 0, len(times) - 1)
        return cum[i] + watts[i] * (np.minimum(x, seg_end[i]) - times[i])

    e = energy_until(edges)
    width = np.diff(edges)
    return edges[:-1] + width / 2, np.diff(e) / np.where(width > 0, width, 1.0)
