"""`wattserve bench`: load-test an OpenAI-compatible server with vllm bench serve's flags."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from wattserve.errors import UsageError

if TYPE_CHECKING:
    from wattserve.schema.bench import BenchConfig


def add(sub: argparse._SubParsersAction) -> None:
    from wattserve.schema.flag_table import BENCH
    from wattserve.schema.flags import add_flags

    p = sub.add_parser("bench", help="load-test an OpenAI-compatible server (vllm bench serve flags)",
                       description="Send requests to an OpenAI-compatible server and report TTFT, TPOT, ITL and "
                                   "end-to-end latency with vllm bench serve's names. Every input (the trace, the "
                                   "result folder, the server's port) is checked before the first request. The "
                                   "flags set fields of wattserve.schema.bench.BenchConfig. Exit status: 0 when "
                                   "every request completed, 1 when some failed (0 with --allow-failures), 2 on "
                                   "bad input or when none completed, 130 on Ctrl-C and 143 on SIGTERM, which stop "
                                   "the run and still print (and with --save-result save) what finished.")
    add_flags(p, BENCH, {"": None}, metavars={"goodput": "KEY:MS", "base-url": "URL", "endpoint": "PATH",
                                              "model": "NAME", "trace": "FILE", "result-dir": "DIR",
                                              "result-filename": "NAME", "api-key": "KEY", "tokenizer": "server|words",
                                              "percentile-metrics": "M[,M...]", "metric-percentiles": "P[,P...]"})
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace, started: float) -> int:
    import asyncio

    from pydantic import ValidationError

    from wattserve.loadgen.bench import (
        asked_length,
        check_plan,
        check_server,
        load_trace_of,
        result_folder,
        run,
        schedule,
        with_prompts,
    )
    from wattserve.loadgen.prompts import size_prompts
    from wattserve.schema.bench import BenchConfig
    from wattserve.schema.flag_table import BENCH
    from wattserve.schema.flags import field_error, overrides
    from wattserve.schema.loading import apply_overrides

    try:
        a = BenchConfig.model_validate(apply_overrides({}, overrides(args, BENCH)))
    except ValidationError as e:
        raise UsageError(field_error(e, BenchConfig, {f.path: f"--{f.name}" for f in BENCH})) from None
    specs = schedule(a, load_trace_of(a))
    about = check_plan(a, specs)
    if a.save_result or a.result_dir is not None or a.result_filename is not None:
        result_folder(a)
    asyncio.run(check_server(a))
    sizing = asyncio.run(size_prompts(a, [n for _, n, _ in specs], asked_length(a)))
    for line in sizing.notes:
        print(line, file=sys.stderr, flush=True)
    about += f", prompt lengths in {sizing.unit}"
    res = asyncio.run(run(a, with_prompts(specs, sizing.prompts), announce=lambda: print(about, flush=True)))
    res["input_len_unit"] = sizing.unit
    res["input_len_check"] = sizing.check.as_json() if sizing.check else None
    return conclude(res, a)


def conclude(res: dict[str, Any], a: BenchConfig) -> int:
    """Print and save the result; the exit status says how the run went.

    A stopped run (SIGINT, SIGTERM) still reports what finished and exits 128 + the signal; a run in
    which nothing succeeded is one line and exit 2 (a table of zeros would hide the cause); a run
    with some failures exits 1, or 0 with --allow-failures, so that a script notices them."""
    from wattserve.loadgen.bench import EXIT_STATUS, failure_line, report, save

    if res["completed"] == 0 and not res["interrupted"]:
        raise UsageError(f"no request succeeded; {failure_line(res)}")
    print(report(res, a), flush=True)
    if a.save_result:
        print(f"saved {save(res, a)}", flush=True)
    if res["interrupted"]:
        print(f"wattserve bench: interrupted by {res['interrupted']}; {failure_line(res)}", file=sys.stderr)
        return EXIT_STATUS[res["interrupted"]]
    return 1 if res["failed"] and not a.allow_failures else 0
