"""`wattserve estimate`: latency, power and clock of one engine iteration, and whether its KV fits."""

from __future__ import annotations

import argparse
import json
from typing import Any

from wattserve.errors import UsageError


def add(sub: argparse._SubParsersAction) -> None:
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
