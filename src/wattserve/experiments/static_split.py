"""Static cap splits: the per-GPU decode cap that spends the rest of a budget, one static run, and
RAPID's static power reallocation (the best prefill/decode cap split at the scenario's P:D split)."""

from __future__ import annotations

from wattserve.catalog import get_gpu
from wattserve.experiments.build import build_run
from wattserve.experiments.run_metrics import metrics
from wattserve.experiments.scenarios import NamedScenario
from wattserve.results.sim_result import SimResult
from wattserve.workload import Workload


def simulate_static(sc: NamedScenario, wl: Workload, prefill: int, prefill_cap: float, decode_cap: float) -> SimResult:
    return build_run(sc.static(prefill, prefill_cap, decode_cap), wl).run()


def decode_cap(sc: NamedScenario, prefill: int, prefill_cap: float) -> float | None:
    """The per-GPU decode cap that spends the rest of the budget, clamped to the GPU's maximum;
    None when the rest is below the GPU's minimum (the candidate split is infeasible)."""
    g = get_gpu(sc.gpu)
    decode = sc.num_gpus // sc.tp - prefill
    cd = (sc.budget_w - prefill * sc.tp * prefill_cap) / (decode * sc.tp)
    return None if cd < g.cap_min_w else min(cd, g.cap_max_w)


def split_cells(sc: NamedScenario) -> list[tuple[float, float]]:
    """RAPID's static power reallocation's candidates: (prefill cap, decode cap) per GPU at the
    scenario's P:D split, the infeasible ones left out."""
    return [(cp, cd) for cp in sc.prefill_caps_w if (cd := decode_cap(sc, sc.prefill, cp)) is not None]


def split_metrics(sc: NamedScenario, wl: Workload, cp: float, cd: float) -> dict[str, float]:
    """One candidate's run, reduced to what the choice reads (a sweep runs each as its own task)."""
    m = metrics(sc, simulate_static(sc, wl, sc.prefill, cp, cd), [])
    return {"slo_attainment": m["slo_attainment"], "gpu_energy_j": m["gpu_energy_j"]}


def pick_split(sc: NamedScenario, cells: list[tuple[float, float]], ms: list[dict[str, float]]) -> tuple[float, float]:
    """The candidate with the best attainment, energy breaking ties; the first of equals wins."""
    best, best_score = (sc.budget_w / sc.num_gpus,) * 2, -1.0
    for cell, m in zip(cells, ms, strict=True):
        score = m["slo_attainment"] - 1e-9 * m["gpu_energy_j"]
        if score > best_score:
            best, best_score = cell, score
    return best


def best_static_split(sc: NamedScenario, wl: Workload) -> tuple[float, float]:
    """RAPID's static power reallocation: search per-role caps at the scenario's P:D split."""
    cells = split_cells(sc)
    return pick_split(sc, cells, [split_metrics(sc, wl, cp, cd) for cp, cd in cells])
