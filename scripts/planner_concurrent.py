"""The planner with and without concurrent layouts in its search, side by side (issue 15).

`--policy planner-concurrent` also judges every instance concurrent (RAPID-Serve, arXiv
2601.11822) each period, on a simulated cluster built to switch into and out of concurrent, with
the warm model (experiments/plan_sim.WARM). `compare` runs both arms over a whole scenario; this
script runs the two on chosen workloads and rates and prints, per workload and rate, the SLO
attainment, the J per output token and the longest decision (wall clock and CPU). With `--static`,
the static layouts the planner chooses between instead: every instance colocated, and every
instance concurrent, at the budget's even cap.

Usage:
  python scripts/planner_concurrent.py SCENARIO [--data DIR] [--jobs N] [--workloads A,B] [--rates R1,R2] [--static]
  python scripts/planner_concurrent.py rapid-h100 --data ../shared/data
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from wattserve.experiments.build import build_run
from wattserve.experiments.run_metrics import metrics
from wattserve.experiments.scenarios import get_scenario
from wattserve.experiments.workloads import make_workload


def one(cell: tuple[str, str, float, bool, str | None]) -> dict[str, Any]:
    name, workload, rate, concurrent, data = cell
    sc = get_scenario(name)
    arm = sc.arm("planner-concurrent" if concurrent else "planner")
    run = build_run(sc.scenario(arm, 0, workload), make_workload(workload, rate, 0, data))
    m = metrics(sc, run.run(), [])
    ctl = run.controller
    return {"workload": workload, "rate": rate, "concurrent": concurrent, "slo_attainment": m["slo_attainment"],
            "joules_per_output_token": m["joules_per_output_token"],
            "planning_ms_max": 1e3 * max(ctl.planning_s),  # type: ignore[union-attr]
            "planning_cpu_ms_max": 1e3 * max(ctl.planning_cpu_s),  # type: ignore[union-attr]
            "concurrent_decisions": sum(1 for d in ctl.decisions if d["layout"] == "concurrent")}  # type: ignore[union-attr]


def static(cell: tuple[str, str, float, str, str | None]) -> float:
    """A static run of every instance in `whole` (colocated or concurrent) at the even cap."""
    name, workload, rate, whole, data = cell
    sc = get_scenario(name)
    scenario = sc.static_whole(whole, sc.budget_w / sc.num_gpus)
    return metrics(sc, build_run(scenario, make_workload(workload, rate, 0, data)).run(), [])["slo_attainment"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario")
    ap.add_argument("--data", default=None)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--workloads", default=None)
    ap.add_argument("--rates", default=None)
    ap.add_argument("--static", action="store_true",
                    help="instead: every instance colocated, then concurrent, at the even cap, no policy")
    a = ap.parse_args()
    sc = get_scenario(a.scenario)
    workloads = a.workloads.split(",") if a.workloads else list(sc.workloads)
    cells = [(a.scenario, w, r, c, a.data) for w in workloads
             for r in ([float(x) for x in a.rates.split(",")] if a.rates else sc.rates[w]) for c in (False, True)]
    if a.static:
        with ProcessPoolExecutor(a.jobs) as pool:
            att = list(pool.map(static, [(n, w, r, k, d) for n, w, r, c, d in cells
                                         for k in ("colocated", "concurrent") if not c]))
        print("| workload | rate | all colocated | all concurrent |\n|---|---|---|---|")
        for (_, w, r, _, _), col, con in zip(cells[::2], att[::2], att[1::2], strict=True):
            print(f"| {w} | {r:g} | {col:.3f} | {con:.3f} |")
        return
    with ProcessPoolExecutor(a.jobs) as pool:
        rows = list(pool.map(one, cells))
    print("| workload | rate | attainment (without / with) | J per output token (without / with) "
          "| longest decision ms (without / with; CPU) | decisions to concurrent |")
    print("|---|---|---|---|---|---|")
    for off, on in zip(rows[::2], rows[1::2], strict=True):
        print(f"| {off['workload']} | {off['rate']:g} | {off['slo_attainment']:.3f} / {on['slo_attainment']:.3f} "
              f"| {off['joules_per_output_token']:.3g} / {on['joules_per_output_token']:.3g} "
              f"| {off['planning_ms_max']:.0f} / {on['planning_ms_max']:.0f} "
              f"({off['planning_cpu_ms_max']:.0f} / {on['planning_cpu_ms_max']:.0f}) | {on['concurrent_decisions']} |")


if __name__ == "__main__":
    main()
