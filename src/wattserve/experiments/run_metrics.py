"""What a comparison reports about one simulated run: attainment (overall and per phase window),
energy, efficiency, the peak sum of caps in force, and the power/cap/role timelines; under a budget
event (budget-drop), breaches of the moving budget and attainment before, during and after it."""

from __future__ import annotations

from typing import Any

import numpy as np

from wattserve.experiments.scenarios import NamedScenario
from wattserve.metrics.budget_tracking import budget_breaches
from wattserve.metrics.power_series import binned_average, cluster_caps, cluster_power
from wattserve.metrics.summary import slo_met
from wattserve.results.sim_result import SimResult
from wattserve.seam import BudgetSignal


def caps_sum_peak(res: SimResult) -> float:
    """Peak over time of the sum of the caps in force (settled), across all GPUs."""
    return round(float(cluster_caps(res.gpus)[1].max()), 3)


def metrics(sc: NamedScenario, res: SimResult, windows: list[tuple[int, int]]) -> dict[str, Any]:
    met = slo_met(res, sc.slo_ttft_ms, sc.slo_tpot_ms)
    energy = sum(g.energy_j for g in res.gpus)
    duration = res.end_s
    done = res.records.status == 1
    out_tokens = int(res.records.output[done].sum())
    avg_w = energy / duration if duration > 0 else 0.0
    return {
        "slo_attainment": float(met.mean()),
        "phase_attainment": [float(met[a:b].mean()) for a, b in windows],
        "completed": int(done.sum()),
        "failed": int((res.records.status == 2).sum()),
        "duration_s": duration,
        "gpu_energy_j": energy,
        "output_tokens": out_tokens,
        "joules_per_output_token": energy / out_tokens if out_tokens else None,
        "gpu_avg_power_w": avg_w,
        "qps_per_w": (done.sum() / duration) / avg_w if avg_w > 0 else 0.0,
        "goodput_per_w": (met.sum() / duration) / avg_w if avg_w > 0 else 0.0,
        "max_cluster_power_w": float(cluster_power(res.gpus)[1].max()),
        "max_sum_caps_w": caps_sum_peak(res),
        "p90_ttft_ms": float(np.nanpercentile(res.records.ttft[done] * 1e3, 90)) if done.any() else None,
        "p90_tpot_ms": float(np.nanpercentile(res.records.tpot[done] * 1e3, 90)) if done.any() else None,
    }


def drop_metrics(budget: BudgetSignal, sc: NamedScenario, res: SimResult) -> dict[str, Any]:
    """Under a budget that dips once and comes back (budget-drop's event), the breaches of the budget
    the run was given, over the whole run (every cap change and budget change is an instant checked),
    its low point, and the attainment of the requests that arrived before the cut, while it was in
    force and in the minute after it was lifted (None: no such requests)."""
    times, watts = budget.times, budget.values
    low = min(range(len(watts)), key=lambda k: watts[k])
    cut_s, back_s = times[low], times[low + 1] if low + 1 < len(times) else res.end_s
    met = slo_met(res, sc.slo_ttft_ms, sc.slo_tpot_ms)
    arrival = res.records.arrival

    def share(lo: float, hi: float) -> float | None:
        pick = (arrival >= lo) & (arrival < hi)
        return float(met[pick].mean()) if pick.any() else None

    return {"budget_breaches": budget_breaches(res.gpus, budget, 0.0, res.end_s),
            "budget_low_w": float(watts[low]), "drop_s": [float(cut_s), float(back_s)],
            "attainment_before_drop": share(0.0, cut_s), "attainment_during_drop": share(cut_s, back_s),
            "attainment_after_drop": share(back_s, back_s + 60.0)}


def timelines(res: SimResult, bins: int = 200) -> dict[str, Any]:
    t, w = cluster_power(res.gpus)
    centers, avg = binned_average(t, w, res.end_s, bins)
    grid = centers
    caps = {}
    for g in res.gpus:
        ct = np.asarray(g.cap_times, dtype=np.float64)
        cv = np.asarray(g.cap_values, dtype=np.float64)
        caps[g.index] = cv[np.clip(np.searchsorted(ct, grid, side="right") - 1, 0, len(cv) - 1)]
    sum_caps = np.sum(list(caps.values()), axis=0)
    prefill_count = np.zeros(len(grid))
    events = sorted(res.role_events)
    for inst in res.instances:
        mine = [(t0, r) for t0, i, r in events if i == inst.iid]
        times = np.array([e[0] for e in mine])
        is_prefill = np.array([1.0 if e[1] == "prefill" else 0.0 for e in mine])
        prefill_count += is_prefill[np.clip(np.searchsorted(times, grid, side="right") - 1, 0, len(mine) - 1)]
    return {"t": grid.tolist(), "power_w": avg.tolist(), "sum_caps_w": sum_caps.tolist(),
            "prefill_instances": prefill_count.tolist()}
