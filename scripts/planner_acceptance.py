"""Issue 15's acceptance checks, read from the compare.json files of `wattserve compare`.

Each check prints its figures and whether it holds, so a closing note quotes this script's output
rather than figures copied by hand:
- sonnet-shift (rapid-mi300x): the planner within 10% of the oracle at every rate, at least the best
  of `rapid` and `colocated`, and no more J per output token than `rapid`;
- Azure code (rapid-h100): the planner's rate at 80% attainment at least `rapid-roles`'s;
- budget drop: zero breaches for every policy, the planner best during the cut;
- the oracle above every policy (it should bound them), and the planning time per decision against
  10% of the planner's period.

Usage:
  for s in rapid-mi300x rapid-h100 budget-drop; do wattserve compare --scenario $s --out runs/table/$s; done
  python scripts/planner_acceptance.py runs/table
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


def load(folder: Path, scenario: str) -> tuple[dict[str, Any], Runs]:
    doc = json.loads((folder / scenario / "compare.json").read_text())
    runs: Runs = defaultdict(dict)
    for r in doc["runs"]:
        runs[(r["workload"], float(r["rate"]))][r["policy"]] = r
    return doc, runs


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def sonnet_shift(runs: Runs) -> None:
    print("## sonnet-shift (rapid-mi300x)")
    print("rate | rapid | colocated | planner | oracle | planner/oracle | J/token planner/rapid")
    within = above = energy = True
    for (wl, rate), p in sorted(runs.items()):
        if wl != "sonnet-shift":
            continue
        a = {k: v["slo_attainment"] for k, v in p.items()}
        j = p["planner"]["joules_per_output_token"] / p["rapid"]["joules_per_output_token"]
        ratio = a["planner"] / a["oracle"] if a["oracle"] else 1.0
        within &= ratio >= 0.9
        above &= a["planner"] >= max(a["rapid"], a["colocated"]) - 1e-9
        energy &= j <= 1.0 + 1e-9
        print(f"{rate:g} | {a['rapid']:.4f} | {a['colocated']:.4f} | {a['planner']:.4f} | {a['oracle']:.4f} | "
              f"{ratio:.3f} | {j:.3f}")
    print(f"- within 10% of the oracle at every rate: {verdict(within)}")
    print(f"- at least the best of rapid and colocated at every rate: {verdict(above)}")
    print(f"- J per output token no more than rapid's at every rate: {verdict(energy)}")


def azure_code(doc: dict[str, Any], runs: Runs) -> None:
    print("## Azure code trace (rapid-h100)")
    rates = sorted(rate for wl, rate in runs if wl == "azure-code")
    point = {}
    for pol in ("rapid-roles", "planner"):
        att = [runs[("azure-code", r)][pol]["slo_attainment"] for r in rates]
        point[pol] = rate_at_attainment(rates, att, doc["attainment_target"])
        print(f"{pol}: " + ", ".join(f"{a:.4f}" for a in att) + "; rate at 80%: "
              + (f"{point[pol]:.1f}" if point[pol] is not None else "below the sweep"))
    top = rates[-1]
    got = {k: (v if v is not None else 0.0) for k, v in point.items()}
    got = {k: (top if v >= top else v) for k, v in got.items()}
    print(f"- planner's rate at 80% at least rapid-roles's: {verdict(got['planner'] >= got['rapid-roles'])}")


def budget_drop(runs: Runs) -> None:
    print("## budget drop")
    breaches = 0
    best = True
    for (wl, rate), p in sorted(runs.items()):
        during = {k: v["attainment_during_drop"] for k, v in p.items()}
        breaches += sum(v["budget_breaches"] for v in p.values())
        top = max(during.values())
        best &= during["planner"] >= top - 1e-9
        print(f"{wl} {rate:g}: planner {during['planner']:.3f}, best other "
              f"{max(v for k, v in during.items() if k != 'planner'):.3f}")
    print(f"- zero breaches for every policy: {verdict(breaches == 0)} ({breaches})")
    print(f"- planner's attainment during the drop the best of all: {verdict(best)}")


def oracle_bound(name: str, runs: Runs) -> None:
    above = [(wl, rate, pol, p[pol]["slo_attainment"], p["oracle"]["slo_attainment"])
             for (wl, rate), p in sorted(runs.items()) if "oracle" in p
             for pol in p if pol != "oracle" and p[pol]["slo_attainment"] > p["oracle"]["slo_attainment"] + 1e-9]
    print(f"## oracle bound ({name}): {verdict(not above)}")
    for wl, rate, pol, a, o in above:
        print(f"- {wl} {rate:g}: {pol} {a:.4f} above the oracle's {o:.4f}")


def planning(name: str, runs: Runs) -> None:
    period_ms = PlannerController.period_s * 1e3
    rows = [p["planner"] for p in runs.values() if "planner" in p]
    for label, key in (("wall clock", "planning_ms"), ("CPU", "planning_cpu_ms")):
        p50 = [r[f"{key}_p50"] for r in rows]
        top = max(r[f"{key}_max"] for r in rows)
        print(f"## planning time, {label} ({name}): median per run {min(p50):.0f}-{max(p50):.0f} ms, max {top:.0f} ms "
              f"({top / period_ms:.1%} of the {period_ms / 1e3:g} s period): {verdict(top <= 0.1 * period_ms)}")


def main(folder: Path) -> None:
    mi_doc, mi = load(folder, "rapid-mi300x")
    h_doc, h = load(folder, "rapid-h100")
    _, bd = load(folder, "budget-drop")
    sonnet_shift(mi)
    azure_code(h_doc, h)
    budget_drop(bd)
    for name, runs in (("rapid-mi300x", mi), ("rapid-h100", h)):
        oracle_bound(name, runs)
    for name, runs in (("rapid-mi300x", mi), ("rapid-h100", h), ("budget-drop", bd)):
        planning(name, runs)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/table"))
