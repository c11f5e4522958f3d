"""One table of every policy on every scenario, from the compare.json files of `wattserve compare`.

Issue 15 asks docs/results.md for "one table of every policy (the four papers' and ours) on every
scenario, with energy and attainment". The scenarios measure different things (a rate sweep read
at 80% attainment, a goodput per layout, a throughput target under a budget), so each row gives the
scenario's own headline next to two figures every scenario has: SLO attainment and energy per
output token, averaged over the scenario's swept rates (or its runs) for that policy.

Usage:
  for s in rapid-mi300x rapid-h100 budget-drop biscale-h100 rapid-serve-mi300x pals-moe; do
    wattserve compare --scenario $s --out runs/table/$s; done
  python scripts/policy_table.py runs/table/*/compare.json > table.md
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from statistics import mean
from typing import Any

Row = tuple[str, str, str, str, float | None, float | None]
"""scenario, workload (or deployment, model), policy, headline, mean attainment, mean J/output token."""


def _jpt(r: dict[str, Any]) -> float | None:
    if r.get("joules_per_output_token") is not None:
        return float(r["joules_per_output_token"])
    tokens = r.get("output_tokens")
    energy = r.get("gpu_energy_j", r.get("energy_j"))
    return float(energy) / tokens if tokens and energy is not None else None


def _mean(xs: list[float | None]) -> float | None:
    got = [x for x in xs if x is not None]
    return mean(got) if got else None


def _sweep(res: dict[str, Any]) -> Iterator[Row]:
    """rapid-mi300x, rapid-h100, budget-drop: rate at the attainment target per workload."""
    target = int(res["attainment_target"] * 100)
    for s in res["summary"]:
        runs = [r for r in res["runs"] if r["workload"] == s["workload"] and r["policy"] == s["policy"]]
        rate = s["rate_at_target"]
        head = "below the sweep" if rate is None else f"{'>= ' if s['above_sweep'] else ''}{rate:.1f} req/s"
        head = f"rate at {target}%: {head}"
        if "budget_events" in res:
            during = _mean([r.get("attainment_during_drop") for r in runs])
            head += f"; during the cut {during:.3f}" if during is not None else ""
            head += f"; breaches {sum(r['budget_breaches'] for r in runs)}"
        yield (res["scenario"], s["workload"], s["policy"], head,
               _mean([r["slo_attainment"] for r in runs]), _mean([_jpt(r) for r in runs]))


def _biscale(res: dict[str, Any]) -> Iterator[Row]:
    keys = dict.fromkeys((r["workload"], r["policy"]) for r in res["runs"])
    for w, p in keys:
        runs = [r for r in res["runs"] if r["workload"] == w and r["policy"] == p]
        vs = _mean([r.get("gpu_energy_vs_distserve") for r in runs])
        head = "energy vs distserve: " + ("-" if vs is None else f"{vs:+.0%}")
        yield (res["scenario"], w, p, head, _mean([r["slo_attainment"] for r in runs]),
               _mean([_jpt(r) for r in runs]))


def _rapid_serve(res: dict[str, Any]) -> Iterator[Row]:
    for g in res["goodput"]:
        runs = [r for r in res["runs"]
                if (r["workload"], r["policy"], r["model"]) == (g["workload"], g["policy"], g["model"])]
        head = f"goodput {g['goodput_rps']:g} req/s, {g['saturation_output_tok_s']:,.0f} tok/s at saturation"
        yield (res["scenario"], f"{g['workload']}, {g['model']}", g["policy"], head,
               _mean([r["slo_attainment"] for r in runs]), _mean([_jpt(r) for r in runs]))


def _pals(res: dict[str, Any]) -> Iterator[Row]:
    for r in res["runs"]:
        head = (f"{r['output_toks_per_joule']:.2f} tok/J; QoS violations {r['qos_violations']} of "
                f"{r['qos_windows_feasible']} feasible windows; breaches {r['budget_breaches']}")
        yield res["scenario"], r["deployment"], r["policy"], head, None, _jpt(r)


def rows(res: dict[str, Any]) -> Iterator[Row]:
    kind = res.get("kind")
    if kind == "biscale":
        return _biscale(res)
    if kind == "rapid-serve":
        return _rapid_serve(res)
    if kind == "pals":
        return _pals(res)
    return _sweep(res)


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| scenario | workload | policy | the scenario's headline | mean SLO attainment | mean J per output token |",
             "|---|---|---|---|---|---|"]
    for res in results:
        for sc, w, p, head, att, jpt in rows(res):
            a = "-" if att is None else f"{att:.3f}"
            j = "-" if jpt is None else f"{jpt:.3g}"
            lines.append(f"| {sc} | {w} | {p} | {head} | {a} | {j} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.write(table([json.loads(Path(a).read_text()) for a in argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
