"""`wattserve bench`: load-test an OpenAI-compatible server with vllm bench serve's flags."""

from __future__ import annotations

import argparse

from wattserve.errors import UsageError


def add(sub: argparse._SubParsersAction) -> None:
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
