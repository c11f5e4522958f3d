"""`wattserve serve`: workers, router, OpenAI API, power agent and controllers."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from wattserve.errors import UsageError

if TYPE_CHECKING:
    from wattserve.runtime.server import Advise
    from wattserve.schema.serve import ServeConfig

API_KEY_ENV = "WATTSERVE_API_KEY"
"""Where serve reads its API key when --api-key is not given (vLLM reads VLLM_API_KEY)."""


def add(sub: argparse._SubParsersAction) -> None:
    from wattserve.schema.flag_table import SERVE
    from wattserve.schema.flags import add_flags

    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible API with P/D workers",
                       description="Start engine workers (prefill/decode or colocated), the router and its "
                                   "OpenAI-compatible API, the GPU power agent and, with --policy and --budget, "
                                   "the power controllers. --model tiny serves a test-sized model on CPU. The "
                                   "flags set fields of wattserve.schema.serve.ServeConfig.")
    add_flags(p, SERVE, {"": None, "control": "power control", "slo": "SLO"},
              metavars={"weights": "DIR", "device": "DEVICE", "host": "ADDR", "api-key": "KEY",
                        "budget-trace": "FILE|SHAPE", "target": "TOK_S|FILE"})
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace, started: float) -> int:
    import asyncio

    from pydantic import ValidationError

    from wattserve.schema.flag_table import SERVE
    from wattserve.schema.flags import field_error, overrides
    from wattserve.schema.loading import apply_overrides
    from wattserve.schema.serve import ServeConfig

    given = overrides(args, SERVE)
    flags = {f.path: f"--{f.name}" for f in SERVE}
    if "api_key" not in given and os.environ.get(API_KEY_ENV) is not None:
        given["api_key"] = os.environ[API_KEY_ENV]
        flags["api_key"] = API_KEY_ENV
    try:
        config = ServeConfig.model_validate(apply_overrides({}, given))
    except ValidationError as e:
        raise UsageError(field_error(e, ServeConfig, flags)) from None
    try:
        from wattserve.runtime.server import check_inputs, serve
    except ImportError as e:
        raise UsageError(f"the runtime needs torch and aiohttp ({e.name} is missing); "
                         "pip install 'wattserve[runtime]'") from None
    try:
        check_inputs(config)
        asyncio.run(serve(config, advise=_advisor(config), plan=_plan_models(config)))
    except UsageError as e:
        raise e.named(flags) from None
    return 0


def _advisor(config: ServeConfig) -> Advise | None:
    """BiScale's tier 1 as a recommendation for this deployment (`--placement-window`): one GPU per
    worker, simulated on `--gpu` with the catalog model the modelled power agent assumes."""
    from functools import partial

    from wattserve.experiments.biscale_scenario import recommend
    from wattserve.runtime.server import worker_specs

    if config.placement_window_s is None:
        return None

    slo = config.slo
    return partial(recommend, config.gpu, config.power_as_model, len(worker_specs(config)),
                   slo.ttft_ms or 1e9, slo.tpot_ms or 1e9)


def _plan_models(config: ServeConfig) -> dict[str, Any] | None:
    """The planner's models for this deployment (`--policy planner`): the simulator and the closed
    form of as many instances as it has workers, one GPU each, as the placement advisor simulates
    them (`--gpu`, with the catalog model the modelled power agent assumes); each candidate sets its
    own roles."""
    from wattserve.control.registry import NEEDS_MODEL

    if config.control.policy not in NEEDS_MODEL:
        return None
    from wattserve.experiments.plan_sim import planner_models
    from wattserve.runtime.server import worker_specs
    from wattserve.schema.cluster import ClusterConfig

    cluster = ClusterConfig(gpu=config.gpu, model=config.power_as_model, tp=1, prefill=0, decode=0,
                            colocated=len(worker_specs(config)))
    cluster = cluster.model_copy(update={"engine": cluster.engine.model_copy(update={"governor": config.governor})})
    slo = config.slo
    return planner_models(cluster, slo.ttft_ms and slo.ttft_ms / 1e3, slo.tpot_ms and slo.tpot_ms / 1e3)
