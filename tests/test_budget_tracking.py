"""The budget-tracking figures (wattserve.metrics.budget_tracking) on a hand-built two-GPU trace
whose answers are worked out by hand in each test's docstring."""

from __future__ import annotations

import numpy as np
import pytest

from wattserve.metrics.budget_tracking import budget_breaches, budget_gap, max_sum_caps, track_budget
from wattserve.results.sim_result import GpuTrace
from wattserve.seam import BudgetSignal


def gpu(index: int, power: list[tuple[float, float]], caps: list[tuple[float, float]]) -> GpuTrace:
    f = np.array
    return GpuTrace(index=index, instance=index, node=0, idle_w=75.0, cap_w=caps[-1][1],
                    times=f([t for t, _ in power]), watts=f([w for _, w in power]),
                    cap_times=f([t for t, _ in caps]), cap_values=f([c for _, c in caps]),
                    clock_times=f([0.0]), clock_values=f([1980.0]),
                    prefill_energy_j=0.0, decode_energy_j=0.0, idle_energy_j=0.0)


GPUS = [gpu(0, [(0, 300), (4, 200)], [(0, 400), (5, 250)]),
        gpu(1, [(0, 100), (2, 350), (6, 150)], [(0, 400), (3, 300)])]
"""Draw: 400 W on [0,2), 650 on [2,4), 550 on [4,6), 350 on [6,10]. Caps: 800 W on [0,3), 700 on
[3,5), 550 from 5 on."""
BUDGET = BudgetSignal((0.0, 3.0, 7.0), (800.0, 600.0, 700.0))


def test_whole_run() -> None:
    """Gap budget - draw: 400 for 2 s, 150 for 1, -50 for 1, 50 for 2, 250 for 1, 350 for 3:
    2300 J over 10 s is 230 W, at most 400 W. Instants 0, 3, 5, 7: only at 3 do the caps (700 W)
    exceed the budget (600 W)."""
    t = track_budget(GPUS, BUDGET, end_s=10.0)
    assert t.fields() == {"budget_breaches": 1, "budget_gap_mean_w": 230.0, "budget_gap_max_w": 400.0,
                          "max_sum_caps_w": 800.0}


def test_a_window() -> None:
    """During the cut [3, 7]: gaps -50, 50, 50, 250 over 1 s each: 300 J / 4 s = 75 W."""
    assert budget_gap(GPUS, BUDGET, 3.0, 7.0) == pytest.approx((75.0, 250.0))
    assert max_sum_caps(GPUS, 3.0, 7.0) == 700.0
    assert max_sum_caps(GPUS, 5.0, 10.0) == 550.0
    assert budget_breaches(GPUS, BUDGET, 3.0, 7.0) == 1


def test_a_window_that_opens_inside_a_breach_counts_it() -> None:
    """At 4 s the caps (700 W) are still above the budget (600 W): the window's first instant."""
    assert budget_breaches(GPUS, BUDGET, 4.0, 7.0) == 1
    assert budget_breaches(GPUS, BUDGET, 5.0, 10.0) == 0


def test_a_window_past_the_end_is_clipped_to_the_run() -> None:
    t = track_budget(GPUS, BUDGET, end_s=10.0, t0=7.0, t1=50.0)
    assert (t.budget_gap_mean_w, t.budget_gap_max_w, t.budget_breaches) == (350.0, 350.0, 0)


def test_a_milliwatt_over_is_no_breach_but_two_are() -> None:
    """The guard accounts in milliwatts; rounding within one is not a breach."""
    caps = [gpu(0, [(0, 100)], [(0, 500.0005)]), gpu(1, [(0, 100)], [(0, 500.0)])]
    assert budget_breaches(caps, BudgetSignal.constant(1000.0), 0.0, 1.0) == 0
    caps = [gpu(0, [(0, 100)], [(0, 500.002)]), gpu(1, [(0, 100)], [(0, 500.0)])]
    assert budget_breaches(caps, BudgetSignal.constant(1000.0), 0.0, 1.0) == 1
