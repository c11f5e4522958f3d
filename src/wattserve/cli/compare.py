"""`wattserve compare`: every arm of a named scenario across its rate sweep."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from wattserve.cli.parser import DEFAULT_DATA
from wattserve.errors import UsageError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="every policy of a named scenario across a sweep of request rates",
                       description="Run a named scenario for every policy, in a process pool: rapid-mi300x and "
                                   "rapid-h100 across their rate sweeps; pals-moe over a throughput-target schedule "
                                   "and a demand-response budget, per deployment; biscale-h100 (DistServe's placement "
                                   "against BiScale's placement and per-iteration DVFS) across its rate sweeps; rapid-serve-mi300x "
                                   "(concurrent prefill/decode against chunked prefill and 4P+4D) per model and "
                                   "workload; budget-drop (every power policy under a budget cut by 30% for a "
                                   "minute). Writes compare.json, compare.md "
                                   "and plots.")
    p.add_argument("--scenario", required=True, metavar="NAME",
                   help="named scenario [allowed: rapid-mi300x, rapid-h100, budget-drop, pals-moe, biscale-h100, "
                   "rapid-serve-mi300x]")
    p.add_argument("--out", metavar="DIR", help="results folder [default runs/compare-<scenario>]")
    p.add_argument("--data", default=str(DEFAULT_DATA), metavar="DIR",
                   help=f"shared data folder, for trace workloads [default {DEFAULT_DATA}, beside the repository]")
    p.add_argument("--policies", metavar="A,B", help="comma-separated subset of the scenario's policies "
                   "[default: all of them]")
    p.add_argument("--workloads", metavar="A,B", help="comma-separated subset of the scenario's workloads "
                   "(pals-moe: its deployments, such as a100-mixtral-8x7b) [default: all of them]")
    p.add_argument("--rates", metavar="R1,R2", help="comma-separated request rates, req/s, each > 0, instead of "
                   "the scenario's sweep [default: the scenario's rates]")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed, >= 0 [default 0]")
    p.add_argument("--jobs", type=int, metavar="N", help="worker processes, >= 1 (with --ray: the local Ray "
                   "instance's CPUs) [default: all cores]")
    p.add_argument("--ray", action="store_true", help="run the tasks on a local Ray instance started for the run "
                   "instead of the process pool (pip install 'wattserve[ray]') [default: off]")
    p.add_argument("--ray-address", metavar="ADDR", help="run the tasks on the Ray cluster at ADDR (what `ray start "
                   "--head` printed, or auto) [default: none]")
    p.add_argument("--perf-profile", default="default", metavar="NAME|FILE",
                   help="latency and power constants of every run: a shipped perf profile or a profile JSON file "
                        "from `wattserve calibrate --profile` [default: default]")
    p.set_defaults(func=cmd_compare)


def _csv_list(value: str | None, allowed: Sequence[str], field: str) -> list[str]:
    if value is None:
        return list(allowed)
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise UsageError(f"unknown value {', '.join(repr(b) for b in bad) or repr(value)}; "
                         f"allowed: {', '.join(allowed)}", field)
    return items


def _rates(text: str) -> list[float]:
    """The rates of `--rates`: every item a finite number > 0; an empty list is refused rather than
    read as "the default sweep", which would run far more than was asked."""
    import math

    items = [r.strip() for r in text.split(",")]
    if not any(items):
        raise UsageError("empty; give comma-separated request rates like 2,4,8 (or leave --rates out)", "--rates")
    out = []
    for item in items:
        try:
            rate = float(item)
        except ValueError:
            raise UsageError(f"{item!r} is not a number; give comma-separated request rates like 2,4,8",
                             "--rates") from None
        if not math.isfinite(rate) or rate <= 0:
            raise UsageError(f"{item} is not allowed; allowed: finite rates > 0 req/s", "--rates")
        out.append(rate)
    return out


def _checked_common(args: argparse.Namespace, name: str) -> Path:
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"{args.jobs} is not allowed; allowed: an integer >= 1", "--jobs")
    if args.seed < 0:
        raise UsageError(f"{args.seed} is not allowed; allowed: an integer >= 0", "--seed")
    from wattserve.metrics.outputs import check_out_dir

    out_name = args.out if args.out is not None else f"runs/compare-{name}"
    check_out_dir(out_name, "--out")
    return Path(out_name)


def _progress(name: str) -> Callable[[int, int], None]:
    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\rcompare {name}: {done}/{total} tasks")
            sys.stderr.flush()

    return progress


def _write(out: Path, res: dict[str, Any], started: float, markdown: Callable[[dict[str, Any]], str],
           plots: Callable[[dict[str, Any], Path], None], calibration: dict[str, Any]) -> None:
    """compare.json, compare.md and the plots, all or none (a staged folder moved in when done)."""
    from wattserve.metrics.outputs import staged_dir, write_json, write_runs_csv

    if sys.stderr.isatty():
        sys.stderr.write("\n")
    res["wall_time_s"] = time.perf_counter() - started
    res.update(calibration)
    if calibration.get("calibration_warning"):
        print(f"warning: {calibration['calibration_warning']}", file=sys.stderr)
    with staged_dir(out) as stage:
        write_runs_csv(stage / "runs.csv", res.get("runs", []))
        if res.get("calibration_warning"):
            (stage / "UNCALIBRATED.txt").write_text(res["calibration_warning"] + "\n")
        write_json(stage / "compare.json", res)
        warning = f"> **{res['calibration_warning']}**\n\n" if res.get("calibration_warning") else ""
        (stage / "compare.md").write_text(warning + markdown(res))
        plots(res, stage)


def _pals(sc: Any, args: argparse.Namespace, started: float) -> int:
    """pals-moe: a throughput-target schedule per deployment, not a rate sweep."""
    from wattserve.experiments.pals_moe import run_pals_compare
    from wattserve.experiments.pals_report import markdown, plots

    if args.rates is not None:
        raise UsageError(f"{sc.name} follows a throughput-target schedule, not a rate sweep; leave --rates out",
                         "--rates")
    policies = _csv_list(args.policies, sc.policies, "--policies")
    deployments = _csv_list(args.workloads, sc.workloads, "--workloads")
    out = _checked_common(args, sc.name)
    with _executor(args) as ex:
        res = run_pals_compare(sc, policies, deployments, args.seed, args.jobs, _progress(sc.name), executor=ex)
    _write(out, res, started, markdown, plots, args.calibration)
    print(markdown(res))
    print(f"results in {out}/ ({res['wall_time_s']:.0f} s)")
    return 0


def _biscale(sc: Any, args: argparse.Namespace, started: float) -> int:
    """biscale-h100: each arm plans its own placement per window, so the result is its own kind."""
    from wattserve.experiments.biscale_report import markdown, plots
    from wattserve.experiments.biscale_scenario import run_biscale_compare

    policies = _csv_list(args.policies, sc.policies, "--policies")
    if "distserve" not in policies:
        policies = ["distserve", *policies]
    workloads = _csv_list(args.workloads, sc.workloads, "--workloads")
    rates = {w: _rates(args.rates) if args.rates is not None else list(sc.rates[w]) for w in workloads}
    _check_traces(args.data)
    out = _checked_common(args, sc.name)
    with _executor(args) as ex:
        res = run_biscale_compare(sc, str(args.data), rates, policies, args.jobs, _progress(sc.name), executor=ex)
    res["seed"] = args.seed
    _write(out, res, started, markdown, plots, args.calibration)
    print(markdown(res))
    print(f"results in {out}/ ({res['wall_time_s']:.0f} s)")
    return 0


def _rapid_serve(sc: Any, args: argparse.Namespace, started: float) -> int:
    """rapid-serve-mi300x: synthetic workloads per model; goodput and saturation throughput per layout."""
    from wattserve.experiments.rapid_serve_report import markdown, plots
    from wattserve.experiments.rapid_serve_scenario import run_rapid_serve_compare

    policies = _csv_list(args.policies, sc.policies, "--policies")
    if "chunked-512" not in policies:
        policies = ["chunked-512", *policies]
    workloads = _csv_list(args.workloads, sc.workloads, "--workloads")
    rates = {w: _rates(args.rates) for w in workloads} if args.rates is not None else None
    out = _checked_common(args, sc.name)
    with _executor(args) as ex:
        res = run_rapid_serve_compare(sc, list(sc.models), workloads, rates, policies, args.seed, args.jobs,
                                      _progress(sc.name), executor=ex)
    _write(out, res, started, markdown, plots, args.calibration)
    print(markdown(res).split("\n\n| model | workload | rate |")[0])
    print(f"results in {out}/ ({res['wall_time_s']:.0f} s)")
    return 0


@contextlib.contextmanager
def _executor(args: argparse.Namespace) -> Iterator[Any]:
    """Where the tasks run (the local pool, or Ray with --ray / --ray-address), stopped afterwards;
    compare.json records which (`executor`)."""
    from wattserve.experiments.executors import make_executor

    try:
        ex = make_executor(args.ray, args.ray_address, args.jobs)
    except UsageError as e:
        raise e.named({"ray": "--ray", "ray_address": "--ray-address"}) from None
    args.calibration["executor"] = ex.name
    try:
        yield ex
    finally:
        ex.close()


def _check_traces(data: str) -> None:
    from wattserve.experiments.workloads import azure_trace

    for kind in ("conv", "code"):
        if not azure_trace(data, kind).is_file():
            raise UsageError(f"{data!r} has no traces/azure_llm_2023/; allowed: the shared data folder", "--data")


def _calibration_warning(profile: Any, sc: Any) -> str | None:
    """The profile's warning for the scenario's GPU(s): PALS's deployments each name their own."""
    gpus = [d.gpu for d in sc.deployments] if hasattr(sc, "deployments") else [sc.gpu]
    return "; ".join(dict.fromkeys(w for g in gpus if (w := profile.warning(g)))) or None


def cmd_compare(args: argparse.Namespace, started: float) -> int:
    from dataclasses import replace

    from wattserve.experiments.biscale_scenario import BiScaleScenario
    from wattserve.experiments.compare import markdown, plots, run_compare
    from wattserve.experiments.pals_moe import PalsScenario
    from wattserve.experiments.rapid_serve_scenario import RapidServeScenario
    from wattserve.experiments.scenarios import get_scenario
    from wattserve.perf.perf_profile import load_profile

    try:
        sc = get_scenario(args.scenario)
    except UsageError as e:
        raise e.named({"scenario": "--scenario"}) from None
    profile = load_profile(args.perf_profile, "--perf-profile")
    sc = replace(sc, perf_profile=args.perf_profile)
    args.calibration = {"perf_profile": profile.name, "calibration_warning": _calibration_warning(profile, sc)}
    if isinstance(sc, PalsScenario):
        return _pals(sc, args, started)
    if isinstance(sc, BiScaleScenario):
        return _biscale(sc, args, started)
    if isinstance(sc, RapidServeScenario):
        return _rapid_serve(sc, args, started)
    policies = _csv_list(args.policies, sc.policies, "--policies")
    workloads = _csv_list(args.workloads, sc.workloads, "--workloads")
    if args.rates is not None:
        rates = {w: _rates(args.rates) for w in workloads}
    else:
        rates = {w: list(sc.rates[w]) for w in workloads}
    if any(w.startswith("azure") for w in workloads):
        _check_traces(args.data)
    out = _checked_common(args, sc.name)
    with _executor(args) as ex:
        res = run_compare(sc, policies, workloads, rates, args.seed, str(args.data), args.jobs, _progress(sc.name),
                          executor=ex)
    _write(out, res, started, markdown, plots, args.calibration)
    print(markdown(res).split("\n\n| workload | rate |")[0])
    print(f"\nresults in {out}/ ({res['wall_time_s']:.0f} s)")
    return 0
