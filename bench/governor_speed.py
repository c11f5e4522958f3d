"""Decision time of BiScale's tier-2 governors (arXiv 2602.18755), the cost paid every iteration.

The prefill MPC (`PrefillMpcGovernor`) runs before every prefill iteration, so it must be cheap: the
issue's target is a median under 0.5 ms and a p99 under 2 ms per decision on this machine. Views are
built as an H100 serving llama-3.1-70b at TP 4 sees them: a batch about to run under an 8,192-token
budget and 0-64 waiting prompts (lognormal lengths around 1,500 tokens, capped at 8,192) that
arrived over the last second, TTFT SLO 600 ms, the default horizon (8 batches) and levels (8), and a
tier-1 base clock at the bottom of the table, so the plan searches every level (the worst case). The
decode governor (`DecodeSlackGovernor`) is timed on decode batches of 1-256 sequences with up to
8,192 tokens of context each, TPOT SLO 100 ms. One governor of each kind is reused across calls, as
an engine does; each call gets a new view. Everything is seeded, so reruns time the same decisions.

Usage: python bench/governor_speed.py [--decisions 2000] [--seed 0]
Last line printed: one JSON object with mpc_decisions, mpc_median_ms, mpc_p99_ms, mpc_max_ms,
decode_decisions, decode_median_ms, decode_p99_ms.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from wattserve.catalog.gpus import get_gpu
from wattserve.catalog.models import BatchShape, get_model
from wattserve.governors import DecodeSlackGovernor, PrefillMpcGovernor
from wattserve.governors.static_view import StaticView
from wattserve.perf.latency import RooflineLatencyModel
from wattserve.perf.power import UtilizationPowerModel

GPU = get_gpu("h100")
LATENCY = RooflineLatencyModel(GPU, get_model("llama-3.1-70b"), 4)
POWER = UtilizationPowerModel.for_gpu(GPU)
BUDGET = 8192


def View(phase: str, shape: BatchShape, now_s: float, queue: list[tuple[float, int]] | None = None,  # noqa: N802
         arrivals: list[float] | None = None) -> StaticView:
    return StaticView(phase, shape, GPU, LATENCY, POWER, now_s, queue or [], arrivals or [], slo_ttft_s=0.6,
                      slo_tpot_s=0.1, kv_usage=0.3, prefill_token_budget=BUDGET)


def prefill_views(n: int, rng: np.random.Generator) -> list[StaticView]:
    views = []
    for i in range(n):
        now = 10.0 + i * 0.05
        lengths = np.minimum(BUDGET, rng.lognormal(np.log(1500), 0.8, size=1 + int(rng.integers(0, 65)))).astype(int)
        arrivals = np.sort(now - rng.uniform(0.0, 1.0, size=len(lengths)))
        first = int(min(lengths[0], BUDGET))
        shape = BatchShape(prefill_tokens=first, prefill_seqs=1, prefill_attn_pairs=first * (first + 1) / 2)
        queue = [(float(a), int(t)) for a, t in zip(arrivals[1:], lengths[1:], strict=True)]
        views.append(View("prefill", shape, now, queue, [float(arrivals[0])]))
    return views


def decode_views(n: int, rng: np.random.Generator) -> list[StaticView]:
    views = []
    for i in range(n):
        seqs = int(rng.integers(1, 257))
        ctx = int(seqs * rng.integers(64, 8193))
        views.append(View("decode", BatchShape(decode_seqs=seqs, decode_ctx=ctx), 10.0 + i * 0.02))
    return views


def timed(decide, views: list[StaticView]) -> np.ndarray:  # noqa: ANN001
    for v in views[:50]:
        decide(v)
    out = np.empty(len(views))
    clock = time.perf_counter_ns
    for i, v in enumerate(views):
        t0 = clock()
        decide(v)
        out[i] = (clock() - t0) / 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decisions", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    mpc = timed(PrefillMpcGovernor(base_mhz=GPU.clocks[0]).decide, prefill_views(a.decisions, rng))
    dec = timed(DecodeSlackGovernor().decide, decode_views(a.decisions, rng))
    for label, t in (("prefill MPC", mpc), ("decode slack", dec)):
        print(f"{label}: {len(t)} decisions, median {np.median(t):.3f} ms, p99 {np.percentile(t, 99):.3f} ms, "
              f"max {t.max():.3f} ms")
    print(json.dumps({"mpc_decisions": len(mpc), "mpc_median_ms": round(float(np.median(mpc)), 4),
                      "mpc_p99_ms": round(float(np.percentile(mpc, 99)), 4), "mpc_max_ms": round(float(mpc.max()), 4),
                      "decode_decisions": len(dec), "decode_median_ms": round(float(np.median(dec)), 4),
                      "decode_p99_ms": round(float(np.percentile(dec, 99)), 4)}))


if __name__ == "__main__":
    main()
