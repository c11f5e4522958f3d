"""`wattserve bench`: load-test an OpenAI-compatible server with vllm bench serve's flags."""

from __future__ import annotations

import argparse

from wattserve.errors import UsageError


def add(sub: argparse._SubParsersAction) -> None:
    from wattserve.schema.flag_table import BENCH
    from wattserve.schema.flags import add_flags

    p = sub.add_parser("bench", help="load-test an OpenAI-compatible server (vllm bench serve flags)",
                       description="Send requests to an OpenAI-compatible server and report TTFT, TPOT, ITL and "
                                   "end-to-end latency with vllm bench serve's names. Every input (the trace, the "
                                   "result folder, the server's port) is checked before the first request. The "
                                   "flags set fields of wattserve.schema.bench.BenchConfig.")
    add_flags(p, BENCH, {"": None}, metavars={"goodput": "KEY:MS", "base-url": "URL", "endpoint": "PATH",
                                              "model": "NAME", "trace": "FILE", "result-dir": "DIR",
                                              "result-filename": "NAME", "api-key": "KEY",
                                              "percentile-metrics": "M[,M...]", "metric-percentiles": "P[,P...]"})
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace, started: float) -> int:
    import asyncio

    from pydantic import ValidationError

    from wattserve.loadgen.bench import (
        check_plan,
        check_server,
        load_trace_of,
        plan,
        report,
        result_folder,
        run,
        save,
    )
    from wattserve.schema.bench import BenchConfig
    from wattserve.schema.flag_table import BENCH
    from wattserve.schema.flags import field_error, overrides
    from wattserve.schema.loading import apply_overrides

    try:
        a = BenchConfig.model_validate(apply_overrides({}, overrides(args, BENCH)))
    except ValidationError as e:
        raise UsageError(field_error(e, BenchConfig, {f.path: f"--{f.name}" for f in BENCH})) from None
    reqs = plan(a, load_trace_of(a))
    about = check_plan(a, reqs)
    if a.save_result or a.result_dir is not None or a.result_filename is not None:
        result_folder(a)
    asyncio.run(check_server(a))
    print(about, flush=True)
    res = asyncio.run(run(a, reqs))
    if res["completed"] == 0:
        first = res["errors"][0] if res["errors"] else "no response"
        raise UsageError(f"no request succeeded ({res['failed']} failed); first error: {first}")
    print(report(res, a))
    if a.save_result:
        print(f"saved {save(res, a)}")
    return 0
