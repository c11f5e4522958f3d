"""The oracle: an experiment, not a policy. It bounds what any controller could reach with
hindsight: for each phase window, the best static configuration run on that window's requests
alone, from an empty cluster, with no switching cost. The configurations are every layout a policy
we ship can run (issue 15: "extend the hindsight oracle to the same search space, layouts
included"): disaggregated P:D splits with a cap per role (every split count, the scenario's prefill
caps and the planner's), every instance colocated under one uniform cap, and every instance
concurrent under one uniform cap (RAPID-Serve's streams, arXiv 2601.11822, which
`planner-concurrent` reaches). Clock locks, step-governor targets and
smaller batch limits are not searched: the planners set them, but a lower clock never shortens an
iteration, so locks and targets cannot raise attainment, and on these scenarios a smaller batch
limit serves less at every rate tried (docs/planner.md); the oracle bounds attainment, and the caps
below the budget it searches already trade speed for power. Attainment and energy add up over windows; the peak sum of
caps is measured over the runs it chose, so its budget check can fail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from wattserve.catalog import get_gpu
from wattserve.experiments.build import build_run
from wattserve.experiments.run_metrics import metrics
from wattserve.experiments.scenarios import NamedScenario
from wattserve.experiments.static_split import decode_cap
from wattserve.schema.scenario import Scenario
from wattserve.seam import cap_grid
from wattserve.workload import Workload


@dataclass(frozen=True)
class OracleCell:
    """One static run: a window (request indices) on one layout. Disaggregated: `prefill` instances
    at `prefill_cap_w` per GPU, the rest decoding at `decode_cap_w`; colocated or concurrent: every
    instance in that role, every GPU at `prefill_cap_w` (`prefill` 0, `decode_cap_w` the same cap)."""

    window: tuple[int, int]
    layout: Literal["disaggregated", "colocated", "concurrent"]
    prefill: int
    prefill_cap_w: float
    decode_cap_w: float

    def scenario(self, sc: NamedScenario) -> Scenario:
        if self.layout != "disaggregated":
            return sc.static_whole(self.layout, self.prefill_cap_w)
        return sc.static(self.prefill, self.prefill_cap_w, self.decode_cap_w)


def colocated_caps(sc: NamedScenario) -> list[float]:
    """The uniform per-GPU caps the oracle tries on the colocated and concurrent layouts: the
    scenario's candidate caps that fit the budget on every GPU, and the budget's even share (at most
    the GPU's maximum)."""
    g = get_gpu(sc.gpu)
    share = min(sc.budget_w / sc.num_gpus, g.cap_max_w)
    caps = {c for c in sc.prefill_caps_w if g.cap_min_w <= c <= share} | {share}
    return sorted(caps)


def oracle_prefill_caps(sc: NamedScenario) -> list[float]:
    """The per-GPU prefill caps the oracle tries: the scenario's, and the planner's grid over the
    GPU's cap range (seam.cap_grid), so that its search covers every split the planner can pick."""
    g = get_gpu(sc.gpu)
    grid = cap_grid(g.cap_min_w, g.cap_max_w)
    return sorted({float(c) for c in sc.prefill_caps_w} | set(grid))


def oracle_cells(sc: NamedScenario, windows: list[tuple[int, int]]) -> list[OracleCell]:
    """Every static candidate of every window, in the order the choice breaks ties by."""
    cells: list[OracleCell] = []
    caps = oracle_prefill_caps(sc)
    for a, b in windows:
        cells += [OracleCell((a, b), "disaggregated", p, cp, cd) for p in sc.oracle_prefill_counts
                  for cp in caps if (cd := decode_cap(sc, p, cp)) is not None]
        cells += [OracleCell((a, b), whole, 0, c, c) for whole in ("colocated", "concurrent")
                  for c in colocated_caps(sc)]
    return cells


def window_workload(wl: Workload, a: int, b: int) -> Workload:
    return Workload(wl.arrival_s[a:b] - wl.arrival_s[a], wl.prompt_tokens[a:b], wl.output_tokens[a:b])


def oracle_metrics(sc: NamedScenario, wl: Workload, cell: OracleCell) -> dict[str, Any]:
    """One candidate's static run on its window's requests alone, from an empty cluster."""
    a, b = cell.window
    return metrics(sc, build_run(cell.scenario(sc), window_workload(wl, a, b)).run(), [])


def oracle_combine(sc: NamedScenario, n_requests: int, windows: list[tuple[int, int]], cells: list[OracleCell],
                   ms: list[dict[str, Any]]) -> dict[str, Any]:
    """Per window, the candidate with the best attainment (less energy breaking ties; the first of
    equals wins), then attainment and energy added up over windows."""
    met_total = 0.0
    energy = 0.0
    duration = 0.0
    max_sum_caps = 0.0
    tokens = 0
    chosen = []
    phase = []
    for a, b in windows:
        best: tuple[float, float, Any] | None = None
        for cell, m in zip(cells, ms, strict=True):
            if cell.window != (a, b):
                continue
            key = (m["slo_attainment"], -m["gpu_energy_j"])
            if best is None or key > (best[0], best[1]):
                best = (m["slo_attainment"], -m["gpu_energy_j"], (cell, m))
        if best is None:
            raise ValueError(f"oracle: no feasible static split for scenario {sc.name!r} "
                             f"(prefill counts {sc.oracle_prefill_counts}, prefill caps {oracle_prefill_caps(sc)})")
        cell, m = best[2]
        met_total += m["slo_attainment"] * (b - a)
        energy += m["gpu_energy_j"]
        tokens += m["output_tokens"]
        duration += m["duration_s"]
        max_sum_caps = max(max_sum_caps, m["max_sum_caps_w"])
        phase.append(m["slo_attainment"])
        chosen.append({"layout": cell.layout, "prefill": cell.prefill, "prefill_cap_w": cell.prefill_cap_w,
                       "decode_cap_w": cell.decode_cap_w, "max_sum_caps_w": m["max_sum_caps_w"]})
    avg_w = energy / duration if duration > 0 else 0.0
    att = met_total / n_requests
    return {"slo_attainment": att, "phase_attainment": phase, "gpu_energy_j": energy, "output_tokens": tokens,
            "joules_per_output_token": energy / tokens if tokens else None, "duration_s": duration,
            "gpu_avg_power_w": avg_w, "qps_per_w": (n_requests / duration) / avg_w if avg_w else 0.0,
            "goodput_per_w": (att * n_requests / duration) / avg_w if avg_w else 0.0,
            "max_sum_caps_w": max_sum_caps, "role_changes": 0, "cap_changes": 0, "oracle_choice": chosen}


def oracle(sc: NamedScenario, wl: Workload, windows: list[tuple[int, int]]) -> dict[str, Any]:
    cells = oracle_cells(sc, windows)
    return oracle_combine(sc, len(wl), windows, cells, [oracle_metrics(sc, wl, c) for c in cells])
