"""The `wattserve` command line.

Every user error is one line on stderr and exit status 2 (no traceback); results are written only
when the run completes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from wattserve.errors import UsageError

DEFAULT_DATA = Path("../shared/data")


class _Formatter(argparse.HelpFormatter):
    """Wraps help without breaking names at their hyphens (rapid-roles, max-clock)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    from wattserve.schema.flag_table import SIMULATE
    from wattserve.schema.flags import add_flags

    p = sub.add_parser("simulate", help="simulate a cluster serving a workload (default: 8x H100, 4P/4D)",
                       description="Simulate a GPU cluster serving an LLM. With no arguments, runs the embedded "
                                   "default: 8x H100, Llama-3.1-8B, 4 prefill + 4 decode, an Azure-conversation-"
                                   "shaped workload for 600 s, SLO TTFT 1 s / TPOT 50 ms. The flags set fields "
                                   "of the scenario schema (wattserve.schema) and override --config.")
    p.add_argument("--config", help="scenario YAML (flags override its fields); a run's DIR/config.yaml reruns it")
    groups = add_flags(p, SIMULATE)
    s = groups["SLO and output"]
    s.add_argument("--out", help="folder for config.yaml, summary.json, requests.csv, power.csv and plots")
    s.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    s.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    p.set_defaults(func=cmd_simulate)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from wattserve.schema.flag_table import SIMULATE
    from wattserve.schema.flags import overrides

    o = overrides(args, SIMULATE)
    if args.colocated:
        o.setdefault("cluster.prefill", 0)
        o.setdefault("cluster.decode", 0)
    return o


def cmd_simulate(args: argparse.Namespace, started: float) -> int:
    from wattserve.experiments.build import build_run
    from wattserve.metrics.summary import summarize, terminal_table
    from wattserve.progress import progress_bar
    from wattserve.schema.loading import load_scenario, scenario_yaml

    scenario = load_scenario(args.config, _overrides(args))
    run = build_run(scenario)
    workload = run.workload
    update, close = progress_bar(float(workload.arrival_s[-1]) if len(workload) else 0.0)
    try:
        res = run.run(progress=update)
    finally:
        close()
    summary = summarize(res, scenario.slo.ttft_ms, scenario.slo.tpot_ms, time.perf_counter() - started)
    if run.log is not None:
        from wattserve.experiments.run_metrics import caps_sum_peak

        summary.update({"policy": scenario.control.policy, "budget_w": scenario.control.budget_w,
                        "max_sum_caps_w": caps_sum_peak(res),
                        "cap_changes": run.log.count("cap"), "role_changes": run.log.count("role")})
    summary["scenario"] = scenario.name
    summary["workload"] = workload.name
    summary["num_prompts"] = len(workload)
    if args.out:
        _write_outputs(Path(args.out), res, scenario, summary, scenario_yaml(scenario), not args.no_plots, run.log,
                       scenario.control.budget_w)
        summary["wall_time_s"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
    else:
        print(terminal_table(summary, f"wattserve simulate: {scenario.name}"))
        if args.out:
            print(f"results in {args.out}/")
    return 0


def _write_outputs(out: Path, res: Any, scenario: Any, summary: dict[str, Any], cfg_yaml: str,
                   plots: bool, log: Any = None, budget_w: float | None = None) -> None:
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
            pl.cluster_power_plot(stage / "cluster_power.png", res, budget_w)
        if log is not None:
            outputs.write_actuations_csv(stage / "actuations.csv", log)
        outputs.write_json(stage / "summary.json", summary)


def _add_estimate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("estimate", help="latency, power and clock of one engine iteration",
                       description="Predict one iteration: B prompts of N tokens each (--prefill-tokens N "
                                   "[--prefill-batch B]) or B decode sequences of C context tokens each "
                                   "(--decode-batch B --context C).")
    p.add_argument("--gpu", default="h100")
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--prefill-tokens", type=int)
    p.add_argument("--prefill-batch", type=int, default=1)
    p.add_argument("--decode-batch", type=int)
    p.add_argument("--context", type=int)
    lim = p.add_mutually_exclusive_group()
    lim.add_argument("--clock", type=int, help="locked SM clock, MHz")
    lim.add_argument("--power-cap", type=float, help="power cap, W")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_estimate)


def cmd_estimate(args: argparse.Namespace, started: float) -> int:
    from wattserve.catalog import get_gpu, get_model
    from wattserve.catalog.models import BatchShape
    from wattserve.perf import RooflineLatencyModel, UtilizationPowerModel, operating_point
    from wattserve.sim.gpu import check_cap, check_clock

    gpu, model = get_gpu(args.gpu), get_model(args.model)
    if args.tp not in (1, 2, 4, 8):
        raise UsageError(f"tp: {args.tp} is not allowed; allowed: 1, 2, 4, 8")
    if (args.prefill_tokens is None) == (args.decode_batch is None):
        raise UsageError("estimate: give either --prefill-tokens N or --decode-batch B --context C")
    if args.prefill_tokens is not None:
        if args.prefill_tokens < 1 or args.prefill_batch < 1:
            raise UsageError("prefill-tokens/prefill-batch: must be >= 1")
        shape = BatchShape.prefill(args.prefill_tokens, args.prefill_batch)
        tokens = args.prefill_tokens * args.prefill_batch
    else:
        if args.context is None or args.context < 1 or args.decode_batch < 1:
            raise UsageError("decode-batch/context: --decode-batch B needs --context C, both >= 1")
        shape = BatchShape.decode(args.decode_batch, args.context)
        tokens = args.decode_batch
    if args.power_cap is not None:
        check_cap(gpu, args.power_cap)
    if args.clock is not None:
        check_clock(gpu, args.clock)
    _check_fits(gpu, model, args.tp, _kv_tokens(args),
                "prefill-tokens/prefill-batch" if args.prefill_tokens is not None else "decode-batch/context")
    lat = RooflineLatencyModel(gpu, model, args.tp)
    pwr = UtilizationPowerModel.for_gpu(gpu)
    cap = args.power_cap if args.power_cap is not None else gpu.tdp_w
    op = operating_point(gpu, lat, pwr, shape, cap, args.clock)
    out = {
        "gpu": gpu.name, "model": model.name, "tp": args.tp, "latency_ms": op.cost.time_s * 1e3,
        "power_w": op.power_w, "clock_mhz": op.clock_mhz, "power_cap_w": cap,
        "compute_util": op.cost.compute_util, "memory_util": op.cost.memory_util,
        "tokens_per_s": tokens / op.cost.time_s, "energy_j_per_token": op.power_w * args.tp * op.cost.time_s / tokens,
        "modelled": True,
    }
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:<20}{v:.4g}" if isinstance(v, float) else f"{k:<20}{v}")
    return 0


def _kv_tokens(args: argparse.Namespace) -> int:
    """Tokens of KV the iteration holds: every prompt token of a prefill batch, or every context
    token of every decode sequence."""
    if args.prefill_tokens is not None:
        return int(args.prefill_tokens * args.prefill_batch)
    return int(args.decode_batch * args.context)


def _check_fits(gpu: Any, model: Any, tp: int, kv_tokens: int, field: str) -> None:
    """Refuse an iteration whose weights or KV cannot be in the GPUs' memory: its latency would be a
    number for a batch no engine can run. The KV room is the simulator's (vLLM's memory share)."""
    from wattserve.schema.cluster import EngineConfig

    mem_util = EngineConfig().mem_util
    room = model.kv_capacity_tokens(gpu.hbm_bytes, tp, mem_util)
    if room < 1:
        raise UsageError(f"tp: {model.name} needs {model.weight_bytes_per_rank(tp) / 1e9:.1f} GB of weights per GPU "
                         f"at tp={tp}, more than {gpu.name}'s {gpu.hbm_gb:g} GB leaves for KV; raise tp")
    if kv_tokens > room:
        raise UsageError(f"{field}: the batch's KV ({kv_tokens:,} tokens) does not fit {tp}x {gpu.name} with "
                         f"{model.name}: room for {room:,} tokens at {mem_util:g} of memory; lower the batch or "
                         "the context, or raise tp")


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="model error against ML.ENERGY, Vidur and Splitwise data",
                       description="Compare the latency and power models with measurements and print (or write) "
                                   "the markdown table in docs/calibration.md.")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (default ../shared/data)")
    p.add_argument("--out", help="write the markdown here instead of printing it")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace, started: float) -> int:
    from wattserve.perf.calibration import markdown_report

    data = Path(args.data)
    if not (data / "anchors/mlenergy/v3_leaderboard/v3_configs_flat.csv").is_file():
        raise UsageError(f"data: {str(data)!r} has no anchors/mlenergy/v3_leaderboard/v3_configs_flat.csv; "
                         "point --data at the shared data folder")
    text = markdown_report(data)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
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


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from wattserve.schema.flag_table import SERVE
    from wattserve.schema.flags import add_flags

    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible API with P/D workers",
                       description="Start engine workers (prefill/decode or colocated), the router and its "
                                   "OpenAI-compatible API, the GPU power agent and, with --policy and --budget, "
                                   "the power controllers. --model tiny serves a test-sized model on CPU. The "
                                   "flags set fields of wattserve.schema.serve.ServeConfig.")
    add_flags(p, SERVE, {"": None, "control": "power control", "slo": "SLO"})
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace, started: float) -> int:
    import asyncio

    from pydantic import ValidationError

    from wattserve.schema.flag_table import SERVE
    from wattserve.schema.flags import overrides
    from wattserve.schema.loading import apply_overrides, format_error
    from wattserve.schema.serve import ServeConfig

    try:
        config = ServeConfig.model_validate(apply_overrides({}, overrides(args, SERVE)))
    except ValidationError as e:
        raise UsageError(format_error(e, "serve")) from None
    try:
        from wattserve.runtime.server import serve
    except ImportError as e:
        raise UsageError(f"serve: the runtime needs torch and aiohttp ({e.name} is missing); "
                         "pip install 'wattserve[runtime]'") from None
    asyncio.run(serve(config))
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="load-test an OpenAI-compatible server (vllm bench serve flags)",
                       description="Send requests to an OpenAI-compatible server and report TTFT, TPOT, ITL and "
                                   "end-to-end latency with vllm bench serve's names.")
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument("--endpoint", default="/v1/completions", help="/v1/completions or /v1/chat/completions")
    p.add_argument("--model")
    p.add_argument("--num-prompts", type=int, default=100)
    p.add_argument("--request-rate", type=float, default=float("inf"), help="req/s (inf: all at once)")
    p.add_argument("--burstiness", type=float, default=1.0)
    p.add_argument("--max-concurrency", type=int)
    p.add_argument("--random-input-len", type=int, default=128)
    p.add_argument("--random-output-len", type=int, default=64)
    p.add_argument("--trace", help="replay arrivals and lengths from an Azure CSV or Mooncake JSONL trace")
    p.add_argument("--goodput", nargs="+", metavar="KEY:MS", help="SLOs, e.g. ttft:1000 tpot:50")
    p.add_argument("--percentile-metrics", default="ttft,tpot,itl")
    p.add_argument("--metric-percentiles", default="99")
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--api-key")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-result", action="store_true")
    p.add_argument("--result-dir")
    p.add_argument("--result-filename")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace, started: float) -> int:
    import asyncio

    from wattserve.loadgen.bench import BenchArgs, parse_goodput, report, run, save

    metrics = tuple(m.strip() for m in args.percentile_metrics.split(",") if m.strip())
    bad = [m for m in metrics if m not in ("ttft", "tpot", "itl", "e2el")]
    if bad:
        raise UsageError(f"percentile-metrics: unknown value {bad[0]!r}; allowed: e2el, itl, tpot, ttft")
    try:
        pcts = tuple(float(x) for x in args.metric_percentiles.split(","))
    except ValueError:
        raise UsageError(f"metric-percentiles: {args.metric_percentiles!r} is not a comma-separated list") from None
    if any(not 0 < p < 100 for p in pcts):
        raise UsageError("metric-percentiles: each must be in (0, 100)")
    if args.num_prompts < 1 or args.request_rate <= 0 or args.burstiness <= 0:
        raise UsageError("num-prompts, request-rate and burstiness must be > 0")
    if args.max_concurrency is not None and args.max_concurrency < 1:
        raise UsageError("max-concurrency: must be >= 1")
    if not args.base_url.startswith(("http://", "https://")):
        raise UsageError(f"base-url: {args.base_url!r} must start with http:// or https://")
    a = BenchArgs(base_url=args.base_url, endpoint=args.endpoint, model=args.model, num_prompts=args.num_prompts,
                  request_rate=args.request_rate, burstiness=args.burstiness, max_concurrency=args.max_concurrency,
                  random_input_len=args.random_input_len, random_output_len=args.random_output_len, trace=args.trace,
                  goodput=parse_goodput(args.goodput), percentile_metrics=metrics, metric_percentiles=pcts,
                  ignore_eos=args.ignore_eos, api_key=args.api_key, seed=args.seed)
    if a.trace:
        from wattserve.workload import load_trace

        load_trace(a.trace)
    res = asyncio.run(run(a))
    print(report(res, a))
    if res["completed"] == 0:
        raise UsageError(f"bench: no request succeeded; first error: {res['errors'][0] if res['errors'] else '?'}")
    if args.save_result:
        print(f"saved {save(res, a, args.result_dir, args.result_filename)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="wattserve", description="Serve LLMs under a power budget: simulate, estimate, calibrate, compare, serve, bench.")
    p.add_argument("--version", action="version", version="wattserve 0.1.0")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_simulate(sub)
    _add_estimate(sub)
    _add_calibrate(sub)
    _add_compare(sub)
    _add_serve(sub)
    _add_bench(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args, started))
    except UsageError as e:
        print(f"wattserve {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wattserve {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
