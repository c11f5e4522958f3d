"""Model error against measurements: the table in docs/calibration.md.

Targets come from the user's copy of the shared data folder (never bundled):
- ML.ENERGY v3 (anchors/mlenergy/v3_leaderboard/v3_configs_flat.csv): median inter-token latency and
  average power per GPU vs batch size, vLLM 0.11.1 serving lm-arena-chat on H100.
- Vidur's H100 operator profile (anchors/vidur/.../compute/h100/meta-llama/<model>/mlp.csv): the
  time of one layer's non-attention operators vs token count.
- Splitwise's power anchors (prompt 700 W; prompt x1.3 and token x1.0 at a 350 W cap).

ML.ENERGY runs are steady-state continuous batching, so each point is predicted as the mean iteration
of that steady state: B decode sequences at the mean context (prompt + output/2) plus the prefill
tokens of the B/output_len requests that start per iteration. The lm-arena-chat prompt length is not
published with the data; ARENA_PROMPT_TOKENS is our assumption (LMArena prompts with history), and
the output length is the measured avg_output_len of each run.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path

from wattserve.catalog.gpus import get_gpu
from wattserve.catalog.models import BatchShape, ModelSpec, get_model
from wattserve.perf.latency import OVERHEAD_S, LatencyModel, RooflineLatencyModel
from wattserve.perf.operating_point import operating_point
from wattserve.perf.power import PowerModel, UtilizationPowerModel

ARENA_PROMPT_TOKENS = 500

MLENERGY_SERIES = (
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b", 1),
    ("meta-llama/Llama-3.3-70B-Instruct", "llama-3.1-70b", 4),
    ("Qwen/Qwen3-30B-A3B-Instruct-2507", "qwen3-30b-a3b", 1),
)
VIDUR_SERIES = (("meta-llama/Llama-2-7b-hf", None), ("meta-llama/Llama-2-70b-hf", "llama-2-70b"))
_VIDUR_OPS = ("input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
              "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")


@dataclass(frozen=True)
class Point:
    series: str
    quantity: str
    x: float
    measured: float
    predicted: float

    @property
    def rel_error(self) -> float:
        return (self.predicted - self.measured) / self.measured


def steady_state_shape(batch: float, prompt: float, output: float) -> BatchShape:
    starts = batch / output
    ctx = prompt + output / 2
    return BatchShape(prefill_tokens=round(starts * prompt), prefill_seqs=round(starts),
                      prefill_attn_pairs=starts * prompt * (prompt + 1) / 2, prefill_ctx=0,
                      decode_seqs=round(batch), decode_ctx=round(batch * ctx))


def mlenergy_points(data_dir: Path, power: PowerModel | None = None, overhead_s: float = OVERHEAD_S,
                    prompt_tokens: float = ARENA_PROMPT_TOKENS) -> list[Point]:
    path = data_dir / "anchors/mlenergy/v3_leaderboard/v3_configs_flat.csv"
    rows = list(csv.DictReader(path.open()))
    gpu = get_gpu("h100")
    out: list[Point] = []
    for model_id, key, tp in MLENERGY_SERIES:
        spec = get_model(key)
        lat: LatencyModel = RooflineLatencyModel(gpu, spec, tp, overhead_s=overhead_s)
        pwr = power or UtilizationPowerModel.for_gpu(gpu)
        for r in rows:
            if (r["model_id"] != model_id or r["gpu_model"] != "H100" or int(r["par_tensor_parallel"]) != tp
                    or int(r["num_gpus"]) != tp or r["task"] != "lm-arena-chat"):
                continue
            b = float(r["avg_batch_size"])
            shape = steady_state_shape(b, prompt_tokens, float(r["avg_output_len"]))
            op = operating_point(gpu, lat, pwr, shape, gpu.tdp_w)
            name = f"{spec.name} TP{tp}"
            out.append(Point(name, "itl_ms", b, float(r["median_itl_ms"]), op.cost.time_s * 1e3))
            out.append(Point(name, "power_w", b, float(r["avg_power_per_gpu_watts"]), op.power_w))
    return out


def vidur_points(data_dir: Path) -> list[Point]:
    gpu = get_gpu("h100")
    out: list[Point] = []
    for hf, key in VIDUR_SERIES:
        path = data_dir / "anchors/vidur/data/profiling/compute/h100" / hf / "mlp.csv"
        if not path.exists():
            continue
        rows = [r for r in csv.DictReader(path.open()) if r["num_tensor_parallel_workers"] == "1"]
        r0 = rows[0]
        spec = get_model(key) if key else ModelSpec(
            "Llama-2-7B", layers=1, hidden=int(r0["n_embd"]), heads=int(r0["n_head"]),
            kv_heads=int(r0["n_kv_head"]), head_dim=int(r0["n_embd"]) // int(r0["n_head"]),
            ffn=int(r0["n_expanded_embd"]), vocab=int(r0["vocab_size"]))
        one_layer = ModelSpec(spec.name, 1, spec.hidden, spec.heads, spec.kv_heads, spec.head_dim, spec.ffn, 0)
        lat = RooflineLatencyModel(gpu, one_layer, 1, overhead_s=0.0)
        seen: set[int] = set()
        for r in rows:
            n = int(r["num_tokens"])
            if n in seen or n not in (1, 8, 32, 128, 512, 1024, 2048, 4096):
                continue
            seen.add(n)
            measured = sum(float(r[f"time_stats.{op}.median"]) for op in _VIDUR_OPS)
            w = one_layer.work(BatchShape(prefill_tokens=n), 1)
            bw = gpu.hbm_bytes_s * lat.eff_mem
            lin_c, lin_m = w.linear_flops / (gpu.peak_flops * lat.eff_gemm), w.weight_bytes / bw
            t = (lin_c**lat.gemm_p + lin_m**lat.gemm_p) ** (1 / lat.gemm_p) + w.elementwise_bytes / bw
            out.append(Point(f"{spec.name} layer (Vidur)", "layer_ms", n, measured, t * 1e3))
    return out


def splitwise_points(power: PowerModel | None = None, overhead_s: float = OVERHEAD_S) -> list[Point]:
    """Prompt power at full clock and the slowdowns at a 350 W cap on H100 (Llama-2-70B TP4)."""
    gpu = get_gpu("h100")
    spec = get_model("llama-2-70b")
    lat = RooflineLatencyModel(gpu, spec, 4, overhead_s=overhead_s)
    pwr = power or UtilizationPowerModel.for_gpu(gpu)
    prompt = BatchShape.prefill(2048)
    token = BatchShape.decode(32, 2048)
    full_p = operating_point(gpu, lat, pwr, prompt, 1e9)
    capped_p = operating_point(gpu, lat, pwr, prompt, 350)
    full_t = operating_point(gpu, lat, pwr, token, gpu.tdp_w)
    capped_t = operating_point(gpu, lat, pwr, token, 350)
    return [
        Point("Splitwise H100", "prompt_power_w", 0, 700.0, min(full_p.power_w, gpu.tdp_w)),
        Point("Splitwise H100", "prompt_slowdown_350w", 0, 1.3, capped_p.cost.time_s / full_p.cost.time_s),
        Point("Splitwise H100", "token_slowdown_350w", 0, 1.0, capped_t.cost.time_s / full_t.cost.time_s),
    ]


def median_abs_error(points: list[Point], quantity: str) -> float:
    errs = [abs(p.rel_error) for p in points if p.quantity == quantity]
    return statistics.median(errs) if errs else float("nan")


def markdown_report(data_dir: Path) -> str:
    ml = mlenergy_points(data_dir)
    vi = vidur_points(data_dir)
    sw = splitwise_points()
    lines = [
        "# Calibration error",
        "",
        "Generated by `wattserve calibrate --data ../shared/data --out docs/calibration.md`"
        " (`make docs`). Do not edit by hand.",
        "",
        f"Prompt length assumed for lm-arena-chat: {ARENA_PROMPT_TOKENS} tokens (not published with the data).",
        "Other GPUs (H200, A100, MI300X) reuse the H100 power shape scaled by (TDP - idle); they are not",
        "calibrated against measurements here.",
        "",
        "## Summary",
        "",
        "| quantity | source | points | median abs error | max abs error |",
        "|---|---|---|---|---|",
    ]
    for q, src, pts in (("itl_ms", "ML.ENERGY v3, H100", ml), ("power_w", "ML.ENERGY v3, H100", ml),
                        ("layer_ms", "Vidur H100 profile", vi)):
        errs = [abs(p.rel_error) for p in pts if p.quantity == q]
        if errs:
            lines.append(f"| {q} | {src} | {len(errs)} | {statistics.median(errs):.1%} | {max(errs):.1%} |")
    for p in sw:
        lines.append(f"| {p.quantity} | {p.series} | 1 | {abs(p.rel_error):.1%} | {abs(p.rel_error):.1%} |")
    lines += ["", "## Every point", "", "| series | quantity | batch / tokens | measured | predicted | error |",
              "|---|---|---|---|---|---|"]
    for p in ml + vi + sw:
        lines.append(f"| {p.series} | {p.quantity} | {p.x:g} | {p.measured:.3g} | {p.predicted:.3g} "
                     f"| {p.rel_error:+.1%} |")
    return "\n".join(lines) + "\n"
