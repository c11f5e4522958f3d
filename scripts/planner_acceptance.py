"""Issue 15's acceptance checks, read from the compare.json files of `wattserve compare`.

Each check prints its figures and whether it holds, so a closing note quotes this script's output
rather than figures copied by hand:
- sonnet-shift (rapid-mi300x): the planner within 10% of the oracle at every rate, at least the best
  of `rapid` and `colocated`, and no more J per output token than `rapid`;
- Azure code (rapid-h100): the planner's rate at 80% attainment at least `rapid-roles`'s;
- budget drop: zero breaches for every policy, the planner best during the cut;
- the oracle above every policy (it should bound them), and the planning time per decision against
  10% of the planner's period.
Every check on the planner runs for each of its arms, `planner` and `planner-concurrent` (which also
judges concurrent layouts); in the budget drop each is compared with the policies that are not
planners.

With `--tables`, instead: the tables of docs/planner.md (per workload and rate, the attainment of
rapid, rapid-roles, colocated, both planner arms and the oracle, each planner's J per output token
over rapid's, and its median and longest decision).

Usage:
  for s in rapid-mi300x rapid-h100 budget-drop; do wattserve compare --scenario $s --out runs/table/$s; done
  python scripts/planner_acceptance.py runs/table [--tables]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from wattserve.control.planner import PlannerController
from wattserve.experiments.compare import rate_at_attainment

Runs = dict[tuple[str, float], dict[str, dict[str, Any]]]
PLANNERS = ("planner", "planner-concurrent")


def load(folder: Path, scenario: str) -> tuple[dict[str, Any], Runs]:
    doc = json.loads((folder / scenario / "compare.json").read_text())
    runs: Runs = defaultdict(dict)
    for r in doc["runs"]:
        runs[(r["workload"], float(r["rate"]))][r["policy"]] = r
    return doc, runs


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def sonnet_shift(runs: Runs, planner: str) -> None:
    print(f"## sonnet-shift (rapid-mi300x), {planner}")
    print(f"rate | rapid | colocated | {planner} | oracle | {planner}/oracle | J/token {planner}/rapid")
    within = above = energy = True
    for (wl, rate), p in sorted(runs.items()):
        if wl != "sonnet-shift":
            continue
        a = {k: v["slo_attainment"] for k, v in p.items()}
        j = p[planner]["joules_per_output_token"] / p["rapid"]["joules_per_output_token"]
        ratio = a[planner] / a["oracle"] if a["oracle"] else 1.0
        within &= ratio >= 0.9
        above &= a[planner] >= max(a["rapid"], a["colocated"]) - 1e-9
        energy &= j <= 1.0 + 1e-9
        print(f"{rate:g} | {a['rapid']:.4f} | {a['colocated']:.4f} | {a[planner]:.4f} | {a['oracle']:.4f} | "
              f"{ratio:.3f} | {j:.3f}")
    print(f"- within 10% of the oracle at every rate: {verdict(within)}")
    print(f"- at least the best of rapid and colocated at every rate: {verdict(above)}")
    print(f"- J per output token no more than rapid's at every rate: {verdict(energy)}")


def azure_code(doc: dict[str, Any], runs: Runs, planner: str) -> None:
    print(f"## Azure code trace (rapid-h100), {planner}")
    rates = sorted(rate for wl, rate in runs if wl == "azure-code")
    point = {}
    for pol in ("rapid-roles", planner):
        att = [runs[("azure-code", r)][pol]["slo_attainment"] for r in rates]
        point[pol] = rate_at_attainment(rates, att, doc["attainment_target"])
        print(f"{pol}: " + ", ".join(f"{a:.4f}" for a in att) + "; rate at 80%: "
              + (f"{point[pol]:.1f}" if point[pol] is not None else "below the sweep"))
    top = rates[-1]
    got = {k: (v if v is not None else 0.0) for k, v in point.items()}
    got = {k: (top if v >= top else v) for k, v in got.items()}
    print(f"- {planner}'s rate at 80% at least rapid-roles's: {verdict(got[planner] >= got['rapid-roles'])}")


def budget_drop(runs: Runs, planner: str) -> None:
    print(f"## budget drop, {planner}")
    breaches = 0
    best = True
    for (wl, rate), p in sorted(runs.items()):
        during = {k: v["attainment_during_drop"] for k, v in p.items()}
        breaches += sum(v["budget_breaches"] for v in p.values())
        others = max(v for k, v in during.items() if k not in PLANNERS)
        best &= during[planner] >= others - 1e-9
        print(f"{wl} {rate:g}: {planner} {during[planner]:.3f}, best policy not a planner {others:.3f}")
    print(f"- zero breaches for every policy: {verdict(breaches == 0)} ({breaches})")
    print(f"- {planner}'s attainment during the drop the best of all: {verdict(best)}")


def oracle_bound(name: str, runs: Runs) -> None:
    above = [(wl, rate, pol, p[pol]["slo_attainment"], p["oracle"]["slo_attainment"])
             for (wl, rate), p in sorted(runs.items()) if "oracle" in p
             for pol in p if pol != "oracle" and p[pol]["slo_attainment"] > p["oracle"]["slo_attainment"] + 1e-9]
    print(f"## oracle bound ({name}): {verdict(not above)}")
    for wl, rate, pol, a, o in above:
        print(f"- {wl} {rate:g}: {pol} {a:.4f} above the oracle's {o:.4f}")


def planning(name: str, runs: Runs, planner: str) -> None:
    period_ms = PlannerController.period_s * 1e3
    rows = [p[planner] for p in runs.values() if planner in p]
    for label, key in (("wall clock", "planning_ms"), ("CPU", "planning_cpu_ms")):
        p50 = [r[f"{key}_p50"] for r in rows]
        top = max(r[f"{key}_max"] for r in rows)
        print(f"## planning time of {planner}, {label} ({name}): median per run {min(p50):.0f}-{max(p50):.0f} ms, max {top:.0f} ms "
              f"({top / period_ms:.1%} of the {period_ms / 1e3:g} s period): {verdict(top <= 0.1 * period_ms)}")


def tables(folder: Path) -> None:
    for scenario in ("rapid-mi300x", "rapid-h100"):
        _, runs = load(folder, scenario)
        planners = [p for p in PLANNERS if any(p in r for r in runs.values())]
        cols = ["rapid", "rapid-roles", "colocated", *planners, "oracle"]
        print(f"\n{scenario}:\n")
        print("| workload | rate | " + " | ".join(cols) + " | " + " | ".join(
            f"{p}: J/token vs rapid, decision ms p50 / max (CPU max), searches / reused" for p in planners) + " |")
        print("|---" * (2 + len(cols) + len(planners)) + "|")
        for (wl, rate), p in runs.items():
            cells = [f"{p[c]['slo_attainment']:.3f}" for c in cols]
            for pl in planners:
                r = p[pl]
                j = r["joules_per_output_token"] / p["rapid"]["joules_per_output_token"]
                cells.append(f"{j:.2f}, {r['planning_ms_p50']:.0f} / {r['planning_ms_max']:.0f} "
                             f"({r['planning_cpu_ms_max']:.0f}), {r['plans']} / {r['plans_reused']}")
            print(f"| {wl} | {rate:g} | " + " | ".join(cells) + " |")


def main(folder: Path) -> None:
    mi_doc, mi = load(folder, "rapid-mi300x")
    h_doc, h = load(folder, "rapid-h100")
    _, bd = load(folder, "budget-drop")
    planners = [p for p in PLANNERS if all(any(p in r for r in runs.values()) for runs in (mi, h, bd))]
    for planner in planners:
        sonnet_shift(mi, planner)
        azure_code(h_doc, h, planner)
        budget_drop(bd, planner)
    for name, runs in (("rapid-mi300x", mi), ("rapid-h100", h)):
        oracle_bound(name, runs)
    for planner in planners:
        for name, runs in (("rapid-mi300x", mi), ("rapid-h100", h), ("budget-drop", bd)):
            planning(name, runs, planner)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--tables"]
    folder = Path(args[0] if args else "runs/table")
    if "--tables" in sys.argv[1:]:
        tables(folder)
    else:
        main(folder)
