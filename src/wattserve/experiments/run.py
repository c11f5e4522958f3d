"""One policy on one workload at one rate, in the simulator, through the control plane."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from wattserve.catalog import get_gpu
from wattserve.control import BudgetGuard, ControlLoop, make_controller
from wattserve.experiments.scenarios import NamedScenario
from wattserve.experiments.workloads import make_workload, phase_bounds
from wattserve.metrics.power_series import binned_average, cluster_caps, cluster_power
from wattserve.metrics.summary import slo_met
from wattserve.schema.cluster import ClusterConfig
from wattserve.seam import ActuationLog, BudgetSignal
from wattserve.sim.backend import SimBackend
from wattserve.sim.cluster import Cluster, SimResult
from wattserve.workload import Workload


@dataclass(frozen=True)
class Job:
    scenario: NamedScenario
    policy: str
    workload: str
    rate: float
    seed: int = 0
    data_dir: str | None = None
    timelines: bool = False


def _caps_sum_peak(res: SimResult) -> float:
    """Peak over time of the sum of the caps in force (settled), across all GPUs."""
    return round(float(cluster_caps(res.gpus)[1].max()), 3)


def simulate_static(sc: NamedScenario, wl: Workload, prefill: int, prefill_cap: float, decode_cap: float,
                    colocated: bool = False) -> SimResult:
    n = sc.num_gpus // sc.tp
    spec = ClusterConfig(gpu=sc.gpu, model=sc.model, tp=sc.tp, prefill=0 if colocated else prefill,
                       decode=0 if colocated else n - prefill, colocated=n if colocated else 0,
                       prefill_cap_w=prefill_cap, decode_cap_w=decode_cap,
                       power_cap_w=prefill_cap if colocated else None)
    return Cluster(spec, wl).run()


def metrics(sc: NamedScenario, res: SimResult, windows: list[tuple[int, int]]) -> dict[str, Any]:
    met = slo_met(res, sc.slo_ttft_ms, sc.slo_tpot_ms)
    energy = sum(g.energy_j for g in res.gpus)
    duration = res.end_s
    done = res.records.status == 1
    avg_w = energy / duration if duration > 0 else 0.0
    return {
        "slo_attainment": float(met.mean()),
        "phase_attainment": [float(met[a:b].mean()) for a, b in windows],
        "completed": int(done.sum()),
        "failed": int((res.records.status == 2).sum()),
        "duration_s": duration,
        "gpu_energy_j": energy,
        "gpu_avg_power_w": avg_w,
        "qps_per_w": (done.sum() / duration) / avg_w if avg_w > 0 else 0.0,
        "goodput_per_w": (met.sum() / duration) / avg_w if avg_w > 0 else 0.0,
        "max_cluster_power_w": float(cluster_power(res.gpus)[1].max()),
        "max_sum_caps_w": _caps_sum_peak(res),
        "p90_ttft_ms": float(np.nanpercentile(res.records.ttft[done] * 1e3, 90)) if done.any() else None,
        "p90_tpot_ms": float(np.nanpercentile(res.records.tpot[done] * 1e3, 90)) if done.any() else None,
    }


def timelines(res: SimResult, bins: int = 200) -> dict[str, Any]:
    t, w = cluster_power(res.gpus)
    centers, avg = binned_average(t, w, res.end_s, bins)
    grid = centers
    caps = {}
    for g in res.gpus:
        ct = np.frombuffer(g.cap_times, dtype=np.float64)
        cv = np.frombuffer(g.cap_values, dtype=np.float64)
        caps[g.index] = cv[np.clip(np.searchsorted(ct, grid, side="right") - 1, 0, len(cv) - 1)]
    sum_caps = np.sum(list(caps.values()), axis=0)
    prefill_count = np.zeros(len(grid))
    events = sorted(res.instances[0].cluster.role_events) if res.instances else []
    for inst in res.instances:
        mine = [(t0, r) for t0, i, r in events if i == inst.iid]
        times = np.array([e[0] for e in mine])
        is_prefill = np.array([1.0 if e[1] == "prefill" else 0.0 for e in mine])
        prefill_count += is_prefill[np.clip(np.searchsorted(times, grid, side="right") - 1, 0, len(mine) - 1)]
    return {"t": grid.tolist(), "power_w": avg.tolist(), "sum_caps_w": sum_caps.tolist(),
            "prefill_instances": prefill_count.tolist()}


def decode_cap(sc: NamedScenario, prefill: int, prefill_cap: float) -> float | None:
    """The per-GPU decode cap that spends the rest of the budget, clamped to the GPU's maximum;
    None when the rest is below the GPU's minimum (the candidate split is infeasible)."""
    g = get_gpu(sc.gpu)
    decode = sc.num_gpus // sc.tp - prefill
    cd = (sc.budget_w - prefill * sc.tp * prefill_cap) / (decode * sc.tp)
    return None if cd < g.cap_min_w else min(cd, g.cap_max_w)


def best_static_split(sc: NamedScenario, wl: Workload) -> tuple[float, float]:
    """RAPID's static power reallocation: search per-role caps at the scenario's P:D split."""
    best, best_score = (sc.budget_w / sc.num_gpus,) * 2, -1.0
    for cp in sc.prefill_caps_w:
        cd = decode_cap(sc, sc.prefill, cp)
        if cd is None:
            continue
        m = metrics(sc, simulate_static(sc, wl, sc.prefill, cp, cd), [])
        score = m["slo_attainment"] - 1e-9 * m["gpu_energy_j"]
        if score > best_score:
            best, best_score = (cp, cd), score
    return best


def oracle(sc: NamedScenario, wl: Workload, windows: list[tuple[int, int]]) -> dict[str, Any]:
    """Hindsight bound: for each window, the best static (P:D split, cap split) run on that window's
    requests alone, from an empty cluster, with no switching cost. Attainment and energy add up
    over windows."""
    met_total = 0.0
    energy = 0.0
    duration = 0.0
    chosen = []
    phase = []
    for a, b in windows:
        sub = Workload(wl.arrival_s[a:b] - wl.arrival_s[a], wl.prompt_tokens[a:b], wl.output_tokens[a:b])
        best: tuple[float, float, Any] | None = None
        for p in sc.oracle_prefill_counts:
            for cp in sc.prefill_caps_w:
                cd = decode_cap(sc, p, cp)
                if cd is None:
                    continue
                res = simulate_static(sc, sub, p, cp, cd)
                m = metrics(sc, res, [])
                key = (m["slo_attainment"], -m["gpu_energy_j"])
                if best is None or key > (best[0], best[1]):
                    best = (m["slo_attainment"], -m["gpu_energy_j"], (p, cp, cd, m))
        assert best is not None
        p, cp, cd, m = best[2]
        n = b - a
        met_total += m["slo_attainment"] * n
        energy += m["gpu_energy_j"]
        duration += m["duration_s"]
        phase.append(m["slo_attainment"])
        chosen.append({"prefill": p, "prefill_cap_w": cp, "decode_cap_w": cd})
    avg_w = energy / duration if duration > 0 else 0.0
    att = met_total / len(wl)
    return {"slo_attainment": att, "phase_attainment": phase, "gpu_energy_j": energy, "duration_s": duration,
            "gpu_avg_power_w": avg_w, "qps_per_w": (len(wl) / duration) / avg_w if avg_w else 0.0,
            "goodput_per_w": (att * len(wl) / duration) / avg_w if avg_w else 0.0,
            "max_sum_caps_w": sc.budget_w, "role_changes": 0, "cap_changes": 0, "oracle_choice": chosen}


def run_job(job: Job) -> dict[str, Any]:
    sc = job.scenario
    wl = make_workload(job.workload, job.rate, job.seed, job.data_dir)
    windows = phase_bounds(wl, job.workload)
    out: dict[str, Any] = {"policy": job.policy, "workload": job.workload, "rate": job.rate}
    if job.policy == "oracle":
        out.update(oracle(sc, wl, windows))
        return out
    n_inst = sc.num_gpus // sc.tp
    colocated = job.policy == "colocated"
    uniform = min(get_gpu(sc.gpu).cap_max_w, sc.budget_w / sc.num_gpus)
    spec = ClusterConfig(gpu=sc.gpu, model=sc.model, tp=sc.tp, prefill=0 if colocated else sc.prefill,
                       decode=0 if colocated else sc.decode, colocated=n_inst if colocated else 0,
                       power_cap_w=uniform)
    cluster = Cluster(spec, wl)
    backend = SimBackend(cluster, BudgetSignal.constant(sc.budget_w), sc.slo_ttft_ms / 1e3, sc.slo_tpot_ms / 1e3)
    log = ActuationLog()
    guard = BudgetGuard(backend, BudgetSignal.constant(sc.budget_w), log)
    params: dict[str, Any] = {}
    if job.policy == "static-split":
        cp, cd = best_static_split(sc, wl)
        params = {"prefill_cap_w": cp, "decode_cap_w": cd}
        out["split_w"] = [cp, cd]
    controller = make_controller(job.policy, **params)
    loop = ControlLoop(backend, guard, [controller])
    loop.start()
    res = cluster.run()
    out.update(metrics(sc, res, windows))
    out["guard_peak_committed_w"] = guard.peak_committed_w
    out["role_changes"] = int(sum(i.role_changes for i in res.instances))
    out["cap_changes"] = log.count("cap")
    out["refused"] = sum(1 for e in log.entries if e.status == "refused")
    if job.timelines:
        out["timelines"] = timelines(res)
        out["actuations"] = [{"time_s": e.time_s, "kind": e.kind, "target": e.target, "value": e.value,
                              "status": e.status, "effective_s": e.effective_s, "note": e.note} for e in log.entries]
    return out
