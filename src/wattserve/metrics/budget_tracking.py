"""How closely a run tracked its power budget: breaches, the gap between budget and draw, and the
peak sum of caps, over the whole run or a window of it (say, during a demand-response cut).

The PALS issue (arXiv 2605.21427) asks that a power-aware server track a moving budget, spending
what it is given (a small gap) and never committing more (no breach). Pure functions over a run's
GPU traces and the budget signal, so simulate, compare and experiments report the same figures.

Definitions (docs/budgets.md):
- `budget_breaches`: the number of instants, among every change of the sum of settled caps and every
  change of the budget within the window, at which the sum of the caps in force exceeds the budget
  in force by more than `TOLERANCE_W` (1 mW, the guard's accounting unit);
- `budget_gap_mean_w`: the time-weighted mean over the window of budget(t) - cluster draw(t);
- `budget_gap_max_w`: its largest value at any instant of the window;
- `max_sum_caps_w`: the largest sum of the caps in force at any instant of the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from wattserve.metrics.power_series import cluster_caps, cluster_power
from wattserve.results.sim_result import GpuTrace
from wattserve.seam import StepSignal

TOLERANCE_W = 1e-3
"""How far the caps may exceed the budget before an instant counts as a breach: one milliwatt,
the unit the guard (and NVML) account in, so rounding never counts as a breach."""


@dataclass(frozen=True)
class BudgetTracking:
    budget_breaches: int
    budget_gap_mean_w: float
    budget_gap_max_w: float
    max_sum_caps_w: float

    def fields(self) -> dict[str, float | int]:
        """The figures under the names summary.json and scripts read."""
        return asdict(self)


def _value_at(times: np.ndarray, values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A step function (values[i] from times[i] on; the first value before times[0]) at `t`."""
    i = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 1)
    return values[i]


def _breakpoints(t0: float, t1: float, *series: np.ndarray) -> np.ndarray:
    """t0 and every change time of `series` inside (t0, t1)."""
    ts = np.concatenate([np.asarray(s, dtype=np.float64) for s in series])
    inside = ts[(ts > t0) & (ts < t1)]
    return np.unique(np.concatenate([[t0], inside]))


def budget_breaches(gpus: Sequence[GpuTrace], budget: StepSignal, t0: float, t1: float) -> int:
    """Instants in [t0, t1] (each cap change, each budget change, and t0) at which the sum of the
    caps in force exceeds the budget in force by more than TOLERANCE_W."""
    ct, cv = cluster_caps(gpus)
    bt, bv = np.asarray(budget.times), np.asarray(budget.values)
    ts = np.unique(np.concatenate([[t0], ct[(ct >= t0) & (ct <= t1)], bt[(bt >= t0) & (bt <= t1)]]))
    over = _value_at(ct, cv, ts) > _value_at(bt, bv, ts) + TOLERANCE_W
    return int(over.sum())


def budget_gap(gpus: Sequence[GpuTrace], budget: StepSignal, t0: float, t1: float) -> tuple[float, float]:
    """(time-weighted mean, max) of budget(t) - cluster draw(t) over [t0, t1]."""
    pt, pv = cluster_power(gpus)
    bt, bv = np.asarray(budget.times), np.asarray(budget.values)
    ts = _breakpoints(t0, t1, pt, bt)
    gap = _value_at(bt, bv, ts) - _value_at(pt, pv, ts)
    if t1 <= t0:
        return float(gap[0]), float(gap[0])
    dt = np.diff(np.append(ts, t1))
    return float(np.dot(gap, dt) / (t1 - t0)), float(gap.max())


def max_sum_caps(gpus: Sequence[GpuTrace], t0: float, t1: float) -> float:
    """The largest sum of caps in force at any instant of [t0, t1]."""
    ct, cv = cluster_caps(gpus)
    ts = _breakpoints(t0, t1, ct)
    return float(_value_at(ct, cv, ts).max())


def track_budget(gpus: Sequence[GpuTrace], budget: StepSignal, end_s: float, t0: float = 0.0,
                 t1: float | None = None) -> BudgetTracking:
    """Every figure over [t0, t1] (default: the whole run, [0, end_s]); the window is clipped to the run."""
    hi = end_s if t1 is None else min(t1, end_s)
    lo = min(max(0.0, t0), hi)
    mean, top = budget_gap(gpus, budget, lo, hi)
    return BudgetTracking(budget_breaches(gpus, budget, lo, hi), round(mean, 3), round(top, 3),
                          round(max_sum_caps(gpus, lo, hi), 3))
