"""`wattserve serve`: workers, router, OpenAI API, power agent and controllers."""

from __future__ import annotations

import argparse

from wattserve.errors import UsageError


def add(sub: argparse._SubParsersAction) -> None:
    from wattserve.schema.flag_table import SERVE
    from wattserve.schema.flags import add_flags

    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible API with P/D workers",
                       description="Start engine workers (prefill/decode or colocated), the router and its "
                                   "OpenAI-compatible API, the GPU power agent and, with --policy and --budget, "
                                   "the power controllers. --model tiny serves a test-sized model on CPU. The "
                                   "flags set fields of wattserve.schema.serve.ServeConfig.")
    add_flags(p, SERVE, {"": None, "control": "power control", "slo": "SLO"},
              metavars={"weights": "DIR", "device": "DEVICE", "host": "ADDR", "api-key": "KEY"})
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace, started: float) -> int:
    import asyncio

    from pydantic import ValidationError

    from wattserve.schema.flag_table import SERVE
    from wattserve.schema.flags import field_error, overrides
    from wattserve.schema.loading import apply_overrides
    from wattserve.schema.serve import ServeConfig

    try:
        config = ServeConfig.model_validate(apply_overrides({}, overrides(args, SERVE)))
    except ValidationError as e:
        raise UsageError(field_error(e, ServeConfig, {f.path: f"--{f.name}" for f in SERVE})) from None
    try:
        from wattserve.runtime.server import check_inputs, serve
    except ImportError as e:
        raise UsageError(f"the runtime needs torch and aiohttp ({e.name} is missing); "
                         "pip install 'wattserve[runtime]'") from None
    check_inputs(config)
    asyncio.run(serve(config))
    return 0
