"""`wattserve estimate`: latency, power and clock of one engine iteration, and whether its KV fits."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from wattserve.errors import UsageError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("estimate", help="latency, power and clock of one engine iteration",
                       description="Predict one iteration: B prompts of N tokens each (--prefill-tokens N "
                                   "[--prefill-batch B]) or B decode sequences of C context tokens each "
                                   "(--decode-batch B --context C).")
    from wattserve.schema.flag_table import SIMULATE

    schema_help = {f.name: f.help for f in SIMULATE}
    p.add_argument("--gpu", default="h100", metavar="NAME", help=schema_help["gpu"])
    p.add_argument("--model", default="llama-3.1-8b", metavar="NAME", help=schema_help["model"])
    p.add_argument("--tp", type=int, default=1, metavar="N", help=schema_help["tp"])
    p.add_argument("--ep", type=int, default=1, metavar="N", help=schema_help["ep"])
    p.add_argument("--expert-skew", type=float, metavar="SHARE", help=schema_help["expert-skew"])
    p.add_argument("--prefill-tokens", type=int, metavar="N",
                   help="prompt tokens of each sequence in a prefill iteration, >= 1 (or give --decode-batch)")
    p.add_argument("--prefill-batch", type=int, default=1, metavar="B",
                   help="prompts in the prefill iteration, >= 1 [default 1]")
    p.add_argument("--decode-batch", type=int, metavar="B",
                   help="sequences in a decode iteration, >= 1; needs --context (or give --prefill-tokens)")
    p.add_argument("--context", type=int, metavar="C", help="context tokens of each decode sequence, >= 1")
    lim = p.add_mutually_exclusive_group()
    lim.add_argument("--clock", type=int, metavar="MHZ",
                     help="locked SM clock, MHz, within the GPU's clock range [default: as the cap allows]")
    lim.add_argument("--power-cap", type=float, metavar="W",
                     help="power cap, W, within the GPU's cap range [default: the GPU's TDP]")
    p.add_argument("--perf-profile", default="default", metavar="NAME|FILE", help=schema_help["perf-profile"])
    p.add_argument("--json", action="store_true", help="print the estimate as one JSON object instead of lines")
    p.set_defaults(func=cmd_estimate)


def cmd_estimate(args: argparse.Namespace, started: float) -> int:
    from wattserve.catalog import get_gpu, get_model
    from wattserve.catalog.models import BatchShape
    from wattserve.perf import operating_point
    from wattserve.perf.perf_profile import load_profile
    from wattserve.sim.cluster import check_moe
    from wattserve.sim.gpu import check_cap, check_clock

    try:
        gpu, model = get_gpu(args.gpu), get_model(args.model)
    except UsageError as e:
        raise e.named({"gpu": "--gpu", "model": "--model"}) from None
    if args.tp not in (1, 2, 4, 8):
        raise UsageError(f"{args.tp} is not allowed; allowed: 1, 2, 4, 8", "--tp")
    check_moe(model, args.tp, args.ep, args.expert_skew, ("--ep", "--expert-skew"))
    if (args.prefill_tokens is None) == (args.decode_batch is None):
        raise UsageError("give either --prefill-tokens N or --decode-batch B --context C (not both)")
    if args.prefill_tokens is not None:
        _at_least_one(args.prefill_tokens, "--prefill-tokens")
        _at_least_one(args.prefill_batch, "--prefill-batch")
        shape = BatchShape.prefill(args.prefill_tokens, args.prefill_batch)
        tokens = args.prefill_tokens * args.prefill_batch
    else:
        _at_least_one(args.decode_batch, "--decode-batch")
        if args.context is None:
            raise UsageError("--decode-batch B needs --context C", "--context")
        _at_least_one(args.context, "--context")
        shape = BatchShape.decode(args.decode_batch, args.context)
        tokens = args.decode_batch
    if args.power_cap is not None:
        check_cap(gpu, args.power_cap, "--power-cap")
    if args.clock is not None:
        check_clock(gpu, args.clock, "--clock")
    _check_fits(gpu, model, args.tp, _kv_tokens(args),
                "--prefill-tokens x --prefill-batch" if args.prefill_tokens is not None else
                "--decode-batch x --context")
    profile = load_profile(args.perf_profile, "--perf-profile")
    lat = profile.latency_model(gpu, model, args.tp, ep=args.ep, expert_skew=args.expert_skew)
    pwr = profile.power_model(gpu)
    cap = args.power_cap if args.power_cap is not None else gpu.tdp_w
    op = operating_point(gpu, lat, pwr, shape, cap, args.clock)
    out = {
        "gpu": gpu.name, "model": model.name, "tp": args.tp, "ep": args.ep, "latency_ms": op.cost.time_s * 1e3,
        "power_w": op.power_w, "clock_mhz": op.clock_mhz, "power_cap_w": cap,
        "compute_util": op.cost.compute_util, "memory_util": op.cost.memory_util,
        "tokens_per_s": tokens / op.cost.time_s, "energy_j_per_token": op.power_w * args.tp * op.cost.time_s / tokens,
        "modelled": True, "perf_profile": profile.name,
        "calibration_warning": profile.warning(args.gpu),
    }
    if out["calibration_warning"]:
        print(f"warning: {out['calibration_warning']}", file=sys.stderr)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            if v is not None:
                print(f"{k:<20}{v:.4g}" if isinstance(v, float) else f"{k:<20}{v}")
    return 0


def _at_least_one(value: int, flag: str) -> None:
    if value < 1:
        raise UsageError(f"{value} is not allowed; allowed: an integer >= 1", flag)


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
        raise UsageError(f"{model.name} needs {model.weight_bytes_per_rank(tp) / 1e9:.1f} GB of weights per GPU "
                         f"at tp={tp}, more than {gpu.name}'s {gpu.hbm_gb:g} GB leaves for KV; raise tp", "--tp")
    if kv_tokens > room:
        raise UsageError(f"the batch's KV ({kv_tokens:,} tokens) does not fit {tp}x {gpu.name} with "
                         f"{model.name}: room for {room:,} tokens at {mem_util:g} of memory; lower the batch or "
                         "the context, or raise tp", field)
