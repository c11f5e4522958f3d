"""`wattserve simulate`: one scenario in the simulator; outputs staged and moved in when complete."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from wattserve.errors import UsageError


def add(sub: argparse._SubParsersAction) -> None:
    from wattserve.schema.flag_table import SIMULATE
    from wattserve.schema.flags import add_flags

    p = sub.add_parser("simulate", help="simulate a cluster serving a workload (default: 8x H100, 4P/4D)",
                       description="Simulate a GPU cluster serving an LLM. With no arguments, runs the embedded "
                                   "default: 8x H100, Llama-3.1-8B, 4 prefill + 4 decode, an Azure-conversation-"
                                   "shaped workload for 600 s, SLO TTFT 1 s / TPOT 50 ms. The flags set fields "
                                   "of the scenario schema (wattserve.schema) and override --config.")
    p.add_argument("--config", help="scenario YAML (flags override its fields); a run's DIR/config.yaml reruns it")
    groups = add_flags(p, SIMULATE, metavars={"budget-trace": "FILE|SHAPE", "target": "TOK_S|FILE"})
    s = groups["SLO and output"]
    s.add_argument("--out", help="folder for config.yaml, summary.json, requests.csv, power.csv and plots")
    s.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    s.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    p.set_defaults(func=cmd_simulate)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from wattserve.schema.flag_table import SIMULATE
    from wattserve.schema.flags import overrides

    o = overrides(args, SIMULATE)
    if args.colocated or args.concurrent:
        o.setdefault("cluster.prefill", 0)
        o.setdefault("cluster.decode", 0)
    return o


def cmd_simulate(args: argparse.Namespace, started: float) -> int:
    """Wall time, on screen and in summary.json alike, runs from the command's start to the end of the
    simulation: building and simulating, not writing the result files."""
    import sys

    from wattserve.experiments.build import build_run
    from wattserve.metrics.outputs import check_out_dir
    from wattserve.metrics.summary import summarize, terminal_table
    from wattserve.perf.perf_profile import calibration_fields
    from wattserve.progress import progress_bar
    from wattserve.schema.flag_table import SIMULATE
    from wattserve.schema.loading import load_scenario, scenario_yaml

    given = _overrides(args)
    flags = {f.path: f"--{f.name}" for f in SIMULATE if f.path in given}
    names = {**flags, "config": "--config", "out": "--out"}
    try:
        scenario = load_scenario(args.config, given, flags)
        if args.out is not None:
            check_out_dir(args.out)
        run = build_run(scenario)
    except UsageError as e:
        raise e.named(names) from None
    workload = run.workload
    if sys.stderr.isatty():
        print(f"simulating {len(workload):,} requests ({workload.name}, {float(workload.arrival_s[-1]):,.0f} s of "
              f"arrivals) on {scenario.cluster.num_gpus} GPUs", file=sys.stderr)
    cluster = run.cluster
    update, close = progress_bar(len(workload), lambda: cluster.completed + cluster.failed)
    try:
        res = run.run(progress=update)
    finally:
        close()
    summary = summarize(res, scenario.slo.ttft_ms, scenario.slo.tpot_ms, time.perf_counter() - started)
    if run.log is not None and run.budget is not None:
        from wattserve.metrics.budget_tracking import track_budget

        summary.update({"policy": scenario.control.policy, "budget_w": run.budget.peak(),
                        **({"budget_trace": scenario.control.budget_trace, "budget_min_w": run.budget.floor()}
                           if scenario.control.budget_trace is not None else {}),
                        **track_budget(res.gpus, run.budget, res.end_s).fields(),
                        "cap_changes": run.log.count("cap"), "role_changes": run.log.count("role")})
    summary["scenario"] = scenario.name
    summary.update(calibration_fields(scenario.cluster.perf_profile, scenario.cluster.gpu))
    if summary["calibration_warning"]:
        print(f"warning: {summary['calibration_warning']}", file=sys.stderr)
    summary["workload"] = workload.name
    summary["num_prompts"] = len(workload)
    if args.out:
        _write_outputs(Path(args.out), res, scenario, summary, scenario_yaml(scenario), not args.no_plots, run.log,
                       run.budget)
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
    else:
        print(terminal_table(summary, "wattserve simulate"))
        if args.out:
            print(f"results in {args.out}/")
    return 0


def _write_outputs(out: Path, res: Any, scenario: Any, summary: dict[str, Any], cfg_yaml: str,
                   plots: bool, log: Any = None, budget: Any = None) -> None:
    from wattserve.metrics import outputs
    from wattserve.metrics.summary import slo_met

    with outputs.staged_dir(out) as stage:
        (stage / "config.yaml").write_text(cfg_yaml)
        met = slo_met(res, scenario.slo.ttft_ms, scenario.slo.tpot_ms)
        outputs.write_requests_csv(stage / "requests.csv", res, met)
        outputs.write_power_csv(stage / "power.csv", res)
        outputs.write_clocks_csv(stage / "clocks.csv", res)
        if plots:
            from wattserve.metrics import plots as pl

            pl.latency_cdfs(stage / "latency_cdf.png", res, scenario.slo.ttft_ms, scenario.slo.tpot_ms)
            pl.cluster_power_plot(stage / "cluster_power.png", res, budget=budget)
        if log is not None:
            outputs.write_actuations_csv(stage / "actuations.csv", log)
        outputs.write_json(stage / "summary.json", summary)
