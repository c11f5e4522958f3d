"""`wattserve compare`: every arm of a named scenario across its rate sweep."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from wattserve.cli.parser import DEFAULT_DATA
from wattserve.errors import UsageError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="every policy of a named scenario across a sweep of request rates",
                       description="Run a named scenario (rapid-mi300x, rapid-h100) for every policy across its "
                                   "rate sweep, in a process pool. Writes compare.json, compare.md and plots.")
    p.add_argument("--scenario", required=True)
    p.add_argument("--out", help="results folder (default runs/compare-<scenario>)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="shared data folder, for trace workloads")
    p.add_argument("--policies", help="comma-separated subset of the scenario's policies")
    p.add_argument("--workloads", help="comma-separated subset of the scenario's workloads")
    p.add_argument("--rates", help="comma-separated request rates (req/s) instead of the scenario's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, help="worker processes (default: all cores)")
    p.set_defaults(func=cmd_compare)


def _csv_list(value: str | None, allowed: Sequence[str], field: str) -> list[str]:
    if value is None:
        return list(allowed)
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise UsageError(f"{field}: unknown value {', '.join(repr(b) for b in bad) or repr(value)}; allowed: {', '.join(allowed)}")
    return items


def cmd_compare(args: argparse.Namespace, started: float) -> int:
    from wattserve.experiments.compare import markdown, plots, run_compare
    from wattserve.experiments.scenarios import get_scenario
    from wattserve.metrics.outputs import staged_dir, write_json

    sc = get_scenario(args.scenario)
    policies = _csv_list(args.policies, sc.policies, "policies")
    workloads = _csv_list(args.workloads, sc.workloads, "workloads")
    if args.rates:
        try:
            given = [float(r) for r in args.rates.split(",")]
        except ValueError:
            raise UsageError(f"rates: {args.rates!r} is not a comma-separated list of numbers") from None
        if not given or min(given) <= 0:
            raise UsageError("rates: every rate must be > 0 req/s")
        rates = {w: given for w in workloads}
    else:
        rates = {w: list(sc.rates[w]) for w in workloads}
    if any(w.startswith("azure") for w in workloads):
        for kind in ("conv", "code"):
            if not (Path(args.data) / f"traces/azure_llm_2023/AzureLLMInferenceTrace_{kind}.csv").is_file():
                raise UsageError(f"data: {args.data!r} has no traces/azure_llm_2023/; point --data at the shared data")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"jobs: {args.jobs} must be >= 1")
    out = Path(args.out or f"runs/compare-{sc.name}")

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\rcompare {sc.name}: {done}/{total} runs")
            sys.stderr.flush()

    res = run_compare(sc, policies, workloads, rates, args.seed, str(args.data), args.jobs, progress)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    res["wall_time_s"] = time.perf_counter() - started
    with staged_dir(out) as stage:
        write_json(stage / "compare.json", res)
        (stage / "compare.md").write_text(markdown(res))
        plots(res, stage)
    print(markdown(res).split("\n\n| workload | rate |")[0])
    print(f"\nresults in {out}/ ({res['wall_time_s']:.0f} s)")
    return 0
