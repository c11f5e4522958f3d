"""`wattserve validate`: does the simulator tell the truth about the engine it claims to model?

Vidur validates its simulator by replaying the same requests on the real engine and in the simulator;
BiScale and PALS fit their models per deployment. This module does both for our own runtime:

1. profile the engine step on a grid of batch shapes (experiments/iteration_profile.py), or read a
   table given, and fit a grid profile to it, a fraction of rows held out (perf/profile_fit.py);
2. per layout (1P/1D, colocated): measure the server's capacity with a burst (every request at
   once, no step log), then run it under Poisson profiling loads at fractions of that capacity
   (ValidateConfig.profile_loads; with rates given, fractions of the highest and no burst) with its
   step log on (serve --step-log: every step's shape and the worker loop's time for it); average the
   logged steps in shape bins and fit the layout's serving profile to them. The engine step alone is
   not what a serving worker pays per step: on a 2-core machine it shares the cores with its router,
   the HTTP streaming and, in 1P/1D, the other worker, and the step log prices all of that. The
   profiling loads span the rates measured (0.2 to 0.8 of capacity against 0.3 to 0.7) and the burst
   stays out of the fit: its steps of dozens of sequences pay for a router streaming to every request
   at once, a cost that grows faster than linearly with the batch, and a fit that holds them priced
   every moderate batch of the measured runs up to 50% too slow (docs/calibration.md). The profiling
   runs and the measured runs of step 3 alternate by rate (`interleaved`), so that a machine drifting
   in speed drifts under both alike;
3. replay the same requests on the real runtime (a server, its worker processes, the load generator;
   experiments/runtime_replay.py) `repeats` times per rate, and in the simulator with the layout's
   profile on the catalog's `cpu` device, with the runtime's engine settings (batch limit, token
   budget, KV blocks). The profiling runs use other seeds: they never see the measured requests;
4. report each metric side by side with its relative error and the runtime's spread over repeats.

The serving path's fixed costs that are not engine steps come from the profiling runs and idle
probes, never from the measured requests: a request's overhead (HTTP, tokenization, routing, the
first token's way back; a constant delay, so it shifts every simulated TTFT by itself) is the
median gap between the runtime's and the simulator's TTFT of the same requests in the lightest
profiling run; for 1P/1D, a KV
hand-off's fixed cost is the idle first-token gap less the colocated one (runtime_replay.IdleCosts),
or less the profile's decode step when colocated is not run. They go into the prompt side's profile
as `request_overhead_s` and `handoff_overhead_s`.

Request lengths follow the Azure LLM 2023 conversation trace scaled to the small runtime models
(prompts / PROMPT_SCALE clipped to PROMPT_RANGE, outputs clipped to OUTPUT_RANGE); without the shared
data, lognormal lengths of about the same means.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from wattserve.catalog.models import BatchShape, get_model
from wattserve.perf.iteration_table import IterationRow
from wattserve.perf.perf_profile import PerfProfile, load_profile, write_profile
from wattserve.perf.profile_fit import fit_profile
from wattserve.schema.validate import LOAD_FRACTIONS, ValidateConfig
from wattserve.workload.workload import Workload

GRID: dict[str, Any] = {"prefill_tokens": "16,32,64,128,256,512", "prefill_seqs": "1,2", "prefill_ctx": "0,128",
        "decode_seqs": "1,2,4,8,16,32", "decode_ctx": "16,64,256,640", "mixed_tokens": "32,128,384",
        "mixed_seqs": "2,8,24", "mixed_ctx": "256", "repeats": 7}
"""The grid profile's shapes: the region the measured runs visit (prompts up to 512 tokens, contexts up
to 640, batches up to a few dozen), 57 shapes, each the median of 7 interleaved passes; the 55 within
the server's token budget are kept (`runnable`)."""
PROMPT_SCALE = 8
PROMPT_RANGE = (16, 512)
OUTPUT_RANGE = (8, 128)
METRICS = ("request_throughput", "mean_ttft_ms", "mean_tpot_ms", "p99_tpot_ms")
"""The rows validate.json's `median_abs_error` is taken over (the issue's acceptance metrics)."""
DETAILS = ("p50_ttft_ms", "p99_ttft_ms", "p50_tpot_ms", "mean_e2el_ms", "p50_e2el_ms", "p99_e2el_ms")
"""Reported beside them, not in the median."""
PROFILE_SEED = 1000
"""Offset of the profiling runs' seeds from the measured runs': they never replay the same requests."""


@dataclass(frozen=True)
class Requests:
    arrival_s: np.ndarray
    prompt: np.ndarray
    output: np.ndarray


def lengths(n: int, seed: int, data: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """`n` (prompt, output) pairs: drawn from the Azure conversation trace when the shared data has it."""
    rng = np.random.default_rng(seed)
    trace = None
    if data is not None:
        from wattserve.experiments.workloads import azure_trace

        path = azure_trace(data, "conv")
        if path.is_file():
            from wattserve.workload.traces import load_azure

            trace = load_azure(path)
    if trace is not None:
        idx = rng.integers(0, len(trace), n)
        prompt = trace.prompt_tokens[idx] / PROMPT_SCALE
        output = trace.output_tokens[idx].astype(float)
        source = f"Azure LLM 2023 conversation trace, prompts / {PROMPT_SCALE}"
    else:
        prompt = rng.lognormal(math.log(120), 0.8, n)
        output = rng.lognormal(math.log(40), 0.7, n)
        source = "lognormal (no shared data)"
    prompt = np.clip(np.round(prompt), *PROMPT_RANGE).astype(int)
    output = np.clip(np.round(output), *OUTPUT_RANGE).astype(int)
    return prompt, output, source


def poisson(n: int, rate: float, seed: int) -> np.ndarray:
    """Arrival offsets of a Poisson process at `rate`, the first at 0 (the replay's and the
    simulator's time 0 alike)."""
    gaps = np.random.default_rng(seed + 1).exponential(1.0 / rate, n)
    gaps[0] = 0.0
    return np.cumsum(gaps)


def runtime_metrics(ttft_s: np.ndarray, tpot_s: np.ndarray, e2e_s: np.ndarray, ok: np.ndarray,
                    duration_s: float) -> dict[str, float]:
    """The reported metrics of one run, from per-request arrays (seconds), as `vllm bench serve`
    computes them: means and percentiles over completed requests, throughput over the run."""
    def stat(v: np.ndarray, q: float | None) -> float:
        v = v[ok & np.isfinite(v)] * 1e3
        if not len(v):
            return math.nan
        return float(v.mean()) if q is None else float(np.percentile(v, q))

    return {
        "request_throughput": float(ok.sum()) / duration_s if duration_s > 0 else 0.0,
        "mean_ttft_ms": stat(ttft_s, None), "p50_ttft_ms": stat(ttft_s, 50), "p99_ttft_ms": stat(ttft_s, 99),
        "mean_tpot_ms": stat(tpot_s, None), "p50_tpot_ms": stat(tpot_s, 50), "p99_tpot_ms": stat(tpot_s, 99),
        "mean_e2el_ms": stat(e2e_s, None), "p50_e2el_ms": stat(e2e_s, 50), "p99_e2el_ms": stat(e2e_s, 99),
    }


def sim_cluster(layout: Any, model: str, profile_path: str | dict[str, str]) -> Any:
    """The simulator's cluster for a runtime layout: the `cpu` device, the runtime's limits, and one
    perf profile, or one per worker role ({"prefill": path, "decode": path} for 1p1d)."""
    from wattserve.schema.cluster import ClusterConfig, EngineConfig

    s = layout.settings()
    engine = EngineConfig(max_seqs=s["max_num_seqs"], colocated_token_budget=s["max_batched_tokens"],
                          prefill_token_budget=s["max_batched_tokens"], block_size=s["block_size"])
    roles = {"prefill": 1, "decode": 1} if s["layout"] == "1p1d" else {"prefill": 0, "decode": 0, "colocated": 1}
    if isinstance(profile_path, dict):
        paths = {"perf_profile": profile_path.get("decode") or profile_path["colocated"],
                 "prefill_perf_profile": profile_path.get("prefill")}
    else:
        paths = {"perf_profile": profile_path}
    return ClusterConfig(gpu="cpu", model=model, tp=1, engine=engine, gpus_per_node=1, **paths, **roles)


def simulate(cluster: Any, req: Requests) -> tuple[dict[str, float], Any]:
    from wattserve.results.records import COMPLETED
    from wattserve.sim.cluster import Cluster

    res = Cluster(cluster, Workload(req.arrival_s, req.prompt, req.output, "validate")).run()
    r = res.records
    ok = r.status == COMPLETED
    return runtime_metrics(r.ttft, r.tpot, r.e2el, ok, res.end_s), res


def capacity(cluster: Any, prompt: np.ndarray, output: np.ndarray) -> float:
    """Requests per second the simulated layout completes with every request queued at time 0."""
    m, _ = simulate(cluster, Requests(np.zeros(len(prompt)), prompt, output))
    return m["request_throughput"]


def step_ms(profile: PerfProfile, model: str, shape: BatchShape) -> float:
    from wattserve.catalog.gpus import get_gpu

    gpu = get_gpu("cpu")
    return profile.latency_model(gpu, get_model(model)).iteration(shape, gpu.clock_max_mhz).time_s * 1e3


def handoff_overhead(profile: PerfProfile, model: str, idle: dict[str, Any]) -> float:
    """A 1p1d KV hand-off's fixed cost: its idle first-token gap less the colocated one when colocated
    was probed (the same decode step and streaming, without the hand-off), else less the profile's
    one-sequence decode step."""
    base = idle["colocated"]["first_gap_s"] if "colocated" in idle else step_ms(
        profile, model, BatchShape.decode(1, 2)) / 1e3
    return max(0.0, idle["1p1d"]["first_gap_s"] - base)


def request_overhead(cluster: Any, req: Requests, runtime_ttft_s: np.ndarray) -> float:
    """The serving path's cost outside engine steps (HTTP, tokenization, routing, the first token's
    way back), from the lightest profiling run: a constant delay before routing shifts every simulated
    TTFT by exactly itself and changes nothing else, so it is the median over requests of the
    runtime's TTFT less the simulator's without it (`cluster`'s profile must have it at 0). The
    lightest load, because near saturation the gap is queueing the simulator prices otherwise."""
    _, res = simulate(cluster, req)
    gap = runtime_ttft_s - res.records.ttft
    gap = gap[np.isfinite(gap)]
    return max(0.0, float(np.median(gap))) if len(gap) else 0.0


def run_validate(cfg: ValidateConfig, out: Path, progress: Callable[[str], None] = lambda _: None
                 ) -> dict[str, Any]:
    """Every step above; writes the profiles, their tables and validate.json into `out` (a staging folder)."""
    from wattserve.experiments.runtime_replay import RuntimeLayout, replay
    from wattserve.perf.iteration_table import binned, read_rows, write_rows

    table = out / "profile_table.csv"
    if cfg.profile_table is not None:
        rows = read_rows(cfg.profile_table, "profile_table")
        write_rows(rows, table)
    else:
        rows = _profile_runtime(cfg, table, progress)
    grid = fit_profile(rows, load_profile("default"), f"runtime-{cfg.model}-grid",
                       f"fitted by `wattserve validate` to {len(rows)} rows of {table.name} (the engine step on a "
                       f"grid of shapes), {cfg.holdout:.0%} held out (seed {cfg.seed})", cfg.holdout, cfg.seed)
    write_profile(grid.profile, out / "grid_profile.json")
    progress(f"grid profile: held-out median error {grid.median_abs(True):.1%}")
    layouts = sorted(cfg.layout_list, key=lambda x: x != "colocated")
    prompt, output, source = lengths(cfg.requests, cfg.seed, cfg.data)
    idle: dict[str, Any] = {}
    fits: dict[str, Any] = {}
    profiles: dict[str, PerfProfile] = {}
    results: list[dict[str, Any]] = []
    in_sample: list[dict[str, Any]] = []
    cdf: dict[str, dict[str, Any]] = {}
    capacities: dict[str, float] = {}
    clusters: dict[str, Any] = {}
    for name in layouts:
        steps_dir = out / "steps" / name
        given = cfg.rate_list
        cap = max(given) if given else 0.0
        if not given:
            progress(f"{name}: capacity burst (every request at once)")
            p, o, _ = lengths(cfg.requests, cfg.seed + PROFILE_SEED, cfg.data)
            r = replay(RuntimeLayout(layout=name, model=cfg.model), np.zeros(cfg.requests), p, o, seed=cfg.seed)
            idle.setdefault(name, vars(r.idle))
            cap = capacities[name] = r.request_throughput
        rates = given or tuple(round(f * cap, 1) for f in LOAD_FRACTIONS)
        layout = RuntimeLayout(layout=name, model=cfg.model)
        profiling: list[tuple[float, Requests, Any]] = []
        measured: list[tuple[float, Requests, list[tuple[dict[str, float], Any]]]] = []
        for rate, kind, k in interleaved([f * cap for f in cfg.profile_load_list], rates):
            if kind == PROFILING:
                seed = cfg.seed + PROFILE_SEED + k + 1
                p, o, _ = lengths(cfg.requests, seed, cfg.data)
                preq = Requests(poisson(cfg.requests, rate, seed), p, o)
                progress(f"{name}: profiling load at {rate:.1f} req/s, step logs on")
                r = replay(replace(layout, step_log=str(steps_dir / f"load{k}")), preq.arrival_s, preq.prompt,
                           preq.output, seed=cfg.seed)
                idle.setdefault(name, vars(r.idle))
                profiling.append((rate, preq, r))
                continue
            req = Requests(poisson(cfg.requests, rate, cfg.seed + k), prompt, output)
            runs = []
            for rep in range(cfg.repeats):
                progress(f"{name} at {rate:g} req/s: runtime run {rep + 1}/{cfg.repeats}")
                r = replay(layout, req.arrival_s, req.prompt, req.output, seed=cfg.seed + rep)
                if r.failed:
                    raise RuntimeError(f"{r.failed} of {len(r.ok)} requests failed on the runtime ({name}, "
                                       f"{rate:g} req/s): {next(e for e in r.errors if e)}")
                runs.append((runtime_metrics(r.ttft_s, r.tpot_s, r.e2e_s, r.ok, r.duration_s), r))
            measured.append((rate, req, runs))
        by_role: dict[str, list[IterationRow]] = {}
        for f in sorted(steps_dir.glob("*/*.csv")):
            by_role.setdefault(f.stem.rsplit("-", 1)[-1], []).extend(read_rows(f, "step_log"))
        paths: dict[str, str] = {}
        for role, logged in sorted(by_role.items()):
            bins = binned(logged)
            label = name if role == "colocated" else f"{name}-{role}"
            write_rows(bins, out / f"serving_table-{label}.csv")
            fit = fit_profile(bins, grid.profile, f"runtime-{cfg.model}-{label}",
                              f"fitted by `wattserve validate` to {len(logged)} steps ({len(bins)} shape bins, each "
                              f"the mean of its steps) that the {name} server's {role} worker logged (serve "
                              f"--step-log) under profiling loads of their own (seeds apart from the measured runs), "
                              f"{cfg.holdout:.0%} of bins held out; request overhead from the profiling runs' TTFT, "
                              f"hand-off overhead from idle probes",
                              cfg.holdout, cfg.seed)
            profile = fit.profile
            if role == "prefill":
                handoff = handoff_overhead(profile, cfg.model, idle)
                profile = replace(profile, latency=replace(profile.latency, handoff_overhead_s=handoff))
            path = out / f"profile-{label}.json"
            write_profile(profile, path)
            fits[label], profiles[label], paths[role] = fit, profile, str(path)
            progress(f"{label} serving profile: held-out median error {fit.median_abs(True):.1%} over {len(bins)} "
                     f"bins of {len(logged)} steps")
        lightest = profiling[0][2]
        ingress = request_overhead(sim_cluster(layout, cfg.model, paths), profiling[0][1],
                                   np.where(lightest.ok, lightest.ttft_s, np.nan))
        prompt_role = "colocated" if name == "colocated" else "prefill"
        label = name if name == "colocated" else f"{name}-prefill"
        profiles[label] = replace(profiles[label], latency=replace(profiles[label].latency,
                                                                   request_overhead_s=ingress))
        write_profile(profiles[label], paths[prompt_role])
        progress(f"{name}: request overhead {ingress * 1e3:.2f} ms (idle probe: "
                 f"{idle[name]['ttft_s'] * 1e3:.2f} ms with the step)")
        cluster = clusters[name] = sim_cluster(layout, cfg.model, paths)
        for k, (rate, req, runs) in enumerate(measured):
            sim, res = simulate(cluster, req)
            results.append({"layout": name, "rate": rate, "runtime_runs": [m for m, _ in runs], "sim": sim,
                            "offered_rps": offered_rps(req.arrival_s)})
            if k == len(measured) // 2:
                last = runs[-1][1]
                cdf[name] = {"rate": rate, "runtime": (last.ttft_s, last.tpot_s),
                             "sim": (res.records.ttft, res.records.tpot)}
        for rate, preq, r in profiling:
            sim, _ = simulate(cluster, preq)
            in_sample.append({"layout": name, "rate": round(rate, 1), "sim": sim,
                              "runtime_runs": [runtime_metrics(r.ttft_s, r.tpot_s, r.e2e_s, r.ok, r.duration_s)]})
    rows_out = _rows(results)
    profiling_rows = [r for r in _rows(in_sample) if r["metric"] in METRICS]
    profiling_error = statistics.median(r["abs_error"] for r in profiling_rows)
    progress(f"the same metrics on the profiling runs themselves: median error {profiling_error:.1%}")
    saturation = [saturation_row(r) for r in results]
    for row in saturation:
        if row["saturated"]:
            progress(f"{row['layout']} at {row['rate']:g} req/s is past saturation: the runtime served "
                     f"{row['runtime_rps']:.1f} of {row['offered_rps']:.1f} req/s offered")
    doc = {
        "model": cfg.model, "layouts": list(layouts), "requests": cfg.requests, "repeats": cfg.repeats,
        "lengths": source, "seed": cfg.seed,
        "profiles": {n: p.to_json() for n, p in profiles.items()},
        "profile_fit": {n: {"fitted_median_abs": f.median_abs(False), "held_out_median_abs": f.median_abs(True),
                            "rows": len(f.errors)} for n, f in fits.items()},
        "grid_profile_fit": {"fitted_median_abs": grid.median_abs(False), "held_out_median_abs": grid.median_abs(True),
                             "rows": len(rows)},
        "idle": idle,
        "runtime_capacity_rps": capacities,
        "sim_capacity_rps": {n: capacity(c, prompt, output) for n, c in clusters.items()},
        "engine_settings": {n: RuntimeLayout(layout=n, model=cfg.model).settings() for n in layouts},
        "saturation": saturation,
        "rows": [r for r in rows_out if r["metric"] in METRICS],
        "details": [r for r in rows_out if r["metric"] in DETAILS],
        "median_abs_error": statistics.median(r["abs_error"] for r in rows_out if r["metric"] in METRICS),
        "profiling_rows": profiling_rows,
        "profiling_median_abs_error": profiling_error,
        "fit_tables": {n: f.table() for n, f in fits.items()},
        "grid_fit_table": grid.table(),
    }
    (out / "validate.json").write_text(json.dumps(doc, indent=2, default=_json) + "\n")
    (out / "validate.md").write_text(markdown(doc))
    _cdf_plot(out / "cdf.png", cdf, cfg.model)
    return doc


PROFILING, MEASURED = 0, 1


def interleaved(loads: Sequence[float], rates: Sequence[float]) -> list[tuple[float, int, int]]:
    """The order of a layout's runtime runs after its burst: profiling loads and measured rates merged
    by rate, a profiling run before a measured one at the same rate, as (rate, PROFILING or MEASURED,
    index in its list). A CPU shared with other work drifts by tens of percent within minutes
    (docs/calibration.md); run in this order, the steps that price a measured run's batches were
    logged minutes, not a whole profiling phase, away from it, and the profile's mean speed is that
    of the span the measured runs cover."""
    jobs = [(r, PROFILING, k) for k, r in enumerate(loads)] + [(r, MEASURED, k) for k, r in enumerate(rates)]
    return sorted(jobs)


def _profile_runtime(cfg: ValidateConfig, table: Path, progress: Callable[[str], None]) -> list[IterationRow]:
    from wattserve.experiments.iteration_profile import profile_iterations
    from wattserve.experiments.runtime_replay import RuntimeLayout
    from wattserve.perf.iteration_table import write_rows
    from wattserve.schema.profile import ProfileConfig

    progress(f"profiling the {cfg.model} engine step")
    pc = ProfileConfig(kind="iterations", backend="runtime", model=cfg.model, out=str(table), seed=cfg.seed,
                       **GRID)
    budget = RuntimeLayout(model=cfg.model).max_batched_tokens
    rows = runnable(profile_iterations(pc), budget)
    write_rows(rows, table)
    return rows


def runnable(rows: list[IterationRow], budget: int) -> list[IterationRow]:
    """The rows of steps the server can run: at most `budget` tokens (prompt tokens plus one per
    decoding sequence). The grid's cross product holds two 512-token prompts in one step, which the
    runtime's 512-token budget never schedules; those two rows were the fit's worst (about 50% too
    fast), on shapes no served step has."""
    return [r for r in rows if r.prefill_tokens + r.decode_seqs <= budget]


SATURATED_BELOW = 0.9
"""A rate is past saturation when the runtime served less than this share of the rate its requests
arrived at: 200 Poisson arrivals already scatter the realized rate by several percent, and the last
requests' service time stretches the run past the last arrival."""


def offered_rps(arrival_s: np.ndarray) -> float:
    """The rate the requests actually arrived at (Poisson draws scatter around the nominal one)."""
    span = float(arrival_s[-1] - arrival_s[0]) if len(arrival_s) > 1 else 0.0
    return (len(arrival_s) - 1) / span if span > 0 else math.inf


def saturation_row(res: dict[str, Any]) -> dict[str, Any]:
    served = float(np.mean([m["request_throughput"] for m in res["runtime_runs"]]))
    return {"layout": res["layout"], "rate": res["rate"], "offered_rps": res["offered_rps"], "runtime_rps": served,
            "saturated": served < SATURATED_BELOW * res["offered_rps"]}


def _rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for res in results:
        for metric in METRICS + DETAILS:
            values = [m[metric] for m in res["runtime_runs"]]
            rt = float(np.mean(values))
            sim = res["sim"][metric]
            err = abs(sim - rt) / rt if rt else math.nan
            out.append({"layout": res["layout"], "rate": res["rate"], "metric": metric, "runtime": rt, "sim": sim,
                        "abs_error": err, "runtime_min": float(min(values)), "runtime_max": float(max(values))})
    return out


def _json(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(type(v).__name__)


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# Simulator vs runtime: {doc['model']} on CPU", "",
             f"{doc['requests']} requests per run ({doc['lengths']}), {doc['repeats']} runtime runs per rate "
             f"(the runtime column is their mean, min-max beside it). The simulator's perf profile of each layout "
             f"is fitted to the steps its serving workers logged under profiling loads of their own, averaged in "
             f"shape bins: " + "; ".join(f"{n} {f['rows']} bins, {f['held_out_median_abs']:.1%} median error on "
                                         f"held-out bins" for n, f in doc["profile_fit"].items())
             + f". The grid profile of the engine step alone ({doc['grid_profile_fit']['rows']} rows): "
             f"{doc['grid_profile_fit']['fitted_median_abs']:.1%} fitted, "
             f"{doc['grid_profile_fit']['held_out_median_abs']:.1%} held out.", "",
             f"**Median absolute error over the rows below: {doc['median_abs_error']:.1%}**", "",
             f"The same metrics on the profiling runs themselves (one run per load, other requests of the same "
             f"mix; their step logs are what the profiles were fitted to): median "
             f"{doc['profiling_median_abs_error']:.1%}. Where the table misses and these runs do not, the "
             f"measured runs differed from the runs the profiles were fitted to.", "",
             "Below saturation? (the runtime served at least "
             f"{SATURATED_BELOW:.0%} of the rate the requests arrived at): "
             + "; ".join(f"{r['layout']} {r['rate']:g}: {r['runtime_rps']:.1f} of {r['offered_rps']:.1f} req/s, "
                         + ("**saturated**" if r["saturated"] else "yes") for r in doc.get("saturation", [])), "",
             "| layout | rate (req/s) | metric | runtime | runtime min-max | sim | error |", "|---|---|---|---|---|---|---|"]
    for r in doc["rows"] + doc["details"]:
        lines.append(f"| {r['layout']} | {r['rate']:g} | {r['metric']} | {r['runtime']:.3g} "
                     f"| {r['runtime_min']:.3g}-{r['runtime_max']:.3g} | {r['sim']:.3g} | {r['abs_error']:.1%} |")
    for n, table in doc["fit_tables"].items():
        lines += ["", f"Error of the {n} serving profile's fit (one row per shape bin):", "", table]
    lines += ["",
              "Error of the grid profile's fit (the engine step alone, medians of repeats):", "", doc["grid_fit_table"],
              ""]
    return "\n".join(lines)


def _cdf_plot(path: Path, cdf: dict[str, dict[str, Any]], model: str) -> None:
    from wattserve.metrics.plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = {"colocated": "tab:blue", "1p1d": "tab:orange"}
    for name, d in cdf.items():
        for ax, i, label in ((axes[0], 0, "TTFT (ms)"), (axes[1], 1, "TPOT (ms)")):
            for src, ls in (("runtime", "-"), ("sim", "--")):
                v = np.sort(np.asarray(d[src][i])[np.isfinite(d[src][i])] * 1e3)
                if len(v):
                    ax.plot(v, np.arange(1, len(v) + 1) / len(v), ls=ls, color=colors.get(name),
                            label=f"{name} {src} ({d['rate']:g} req/s)")
            ax.set_xlabel(label)
            ax.set_ylabel("fraction of requests")
            ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Simulator (dashed) vs runtime (solid): {model} on CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
