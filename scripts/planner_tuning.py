"""The planner with and without its tuning beyond roles and caps, side by side (issue 15).

With tuning (each planner arm as `compare` runs it: decode-slack governors whose target the planner
sets, clock locks, batch limits), and without: the same arm on max-clock governors with no clock
levels, which is the planner before its tuning (`SetStepTarget` then has nothing to target, and a
smaller batch limit is judged as before). Per workload and rate: SLO attainment, J per output
token (and the ratio), the longest decision (wall clock), and how many decisions ended with a step
target above 0, a clock lock, or a batch limit in force. With `--static-batch`, instead: every
instance colocated or concurrent at the budget's even cap, no policy, with the engine's batch limit
and with 128, 64 and 32, on the cells where a batch limit could matter (TPOT near or over its SLO).

Usage:
  python scripts/planner_tuning.py SCENARIO [--arm planner|planner-concurrent] [--data DIR] [--jobs N]
                                   [--workloads A,B] [--rates R1,R2]
  python scripts/planner_tuning.py rapid-h100 --data ../shared/data --static-batch
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

from wattserve.control.planner import PlannerController
from wattserve.experiments.build import build_run
from wattserve.experiments.run_metrics import metrics
from wattserve.experiments.scenarios import get_scenario
from wattserve.experiments.workloads import make_workload

STATIC_BATCH = {"rapid-h100": (("azure-conv", 160, "colocated"), ("azure-conv", 190, "colocated"),
                               ("azure-conv", 190, "concurrent"), ("azure-conv", 220, "concurrent"),
                               ("azure-code", 28, "colocated")),
                "rapid-mi300x": (("sonnet-shift", 38, "colocated"), ("longbench-like", 60, "colocated"))}


def one(cell: tuple[str, str, str, float, bool, str | None]) -> dict[str, Any]:
    name, label, workload, rate, tuned, data = cell
    sc = get_scenario(name)
    arm = sc.arm(label) if tuned else replace(sc.arm(label), governor="max-clock")
    run = build_run(sc.scenario(arm, 0, workload), make_workload(workload, rate, 0, data))
    ctl = run.controller
    assert isinstance(ctl, PlannerController)
    if not tuned:
        ctl.clock_levels = ()
    m = metrics(sc, run.run(), [])
    d = ctl.decisions
    return {"slo_attainment": m["slo_attainment"], "joules_per_output_token": m["joules_per_output_token"],
            "planning_ms_max": 1e3 * max(ctl.planning_s), "decisions": len(d),
            "target": sum(1 for x in d if x["step_target"]),
            "clock": sum(1 for x in d if x["prefill_clock_mhz"] or x["decode_clock_mhz"]),
            "batch": sum(1 for x in d if x["decode_max_seqs"])}


def static_batch(cell: tuple[str, str, float, str, int | None, str | None]) -> float:
    name, workload, rate, whole, seqs, data = cell
    sc = get_scenario(name)
    s = sc.static_whole(whole, sc.budget_w / sc.num_gpus)
    if seqs is not None:
        engine = s.cluster.engine.model_copy(update={"max_seqs": seqs})
        s = s.model_copy(update={"cluster": s.cluster.model_copy(update={"engine": engine})})
    return metrics(sc, build_run(s, make_workload(workload, rate, 0, data)).run(), [])["slo_attainment"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario")
    ap.add_argument("--arm", default="planner", choices=("planner", "planner-concurrent"))
    ap.add_argument("--data", default=None)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--workloads", default=None)
    ap.add_argument("--rates", default=None)
    ap.add_argument("--static-batch", action="store_true",
                    help="instead: static whole layouts with smaller batch limits, no policy")
    a = ap.parse_args()
    sc = get_scenario(a.scenario)
    if a.static_batch:
        sizes = (None, 128, 64, 32)
        cells = [(a.scenario, w, r, k, n, a.data) for w, r, k in STATIC_BATCH.get(a.scenario, ()) for n in sizes]
        with ProcessPoolExecutor(a.jobs) as pool:
            att = list(pool.map(static_batch, cells))
        print("| workload | rate | layout | engine's limit | 128 | 64 | 32 |\n|---|---|---|---|---|---|---|")
        for k in range(0, len(cells), len(sizes)):
            _, w, r, whole, _, _ = cells[k]
            print(f"| {w} | {r:g} | {whole} | " + " | ".join(f"{x:.3f}" for x in att[k:k + len(sizes)]) + " |")
        return
    workloads = a.workloads.split(",") if a.workloads else list(sc.workloads)
    cells = [(a.scenario, a.arm, w, r, t, a.data) for w in workloads
             for r in ([float(x) for x in a.rates.split(",")] if a.rates else sc.rates[w]) for t in (False, True)]
    with ProcessPoolExecutor(a.jobs) as pool:
        rows = list(pool.map(one, cells))
    print("| workload | rate | attainment (without / with) | J per output token (without / with, ratio) "
          "| longest decision ms (without / with) | decisions with a step target / clock lock / batch limit |")
    print("|---|---|---|---|---|---|")
    for k in range(0, len(rows), 2):
        off, on = rows[k], rows[k + 1]
        _, _, w, r, _, _ = cells[k]
        print(f"| {w} | {r:g} | {off['slo_attainment']:.3f} / {on['slo_attainment']:.3f} "
              f"| {off['joules_per_output_token']:.4g} / {on['joules_per_output_token']:.4g}, "
              f"{on['joules_per_output_token'] / off['joules_per_output_token']:.3f}x "
              f"| {off['planning_ms_max']:.0f} / {on['planning_ms_max']:.0f} "
              f"| {on['target']} / {on['clock']} / {on['batch']} of {on['decisions']} |")


if __name__ == "__main__":
    main()
