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
from typing import Any

from wattserve.catalog.gpus import get_gpu
from wattserve.catalog.models import BatchShape, ModelSpec, get_model
from wattserve.perf.latency import LatencyModel, RooflineLatencyModel
from wattserve.perf.operating_point import operating_point
from wattserve.perf.perf_profile import PerfProfile, load_profile, shipped
from wattserve.perf.power import PowerModel

ARENA_PROMPT_TOKENS = 500

MLENERGY_SERIES = (
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b", 1),
    ("meta-llama/Llama-3.3-70B-Instruct", "llama-3.1-70b", 4),
    ("Qwen/Qwen3-30B-A3B-Instruct-2507", "qwen3-30b-a3b", 1),
)
MLENERGY_V2_MODELS = {
    "meta-llama/Meta-Llama-3.1-8B-Instruct": "llama-3.1-8b",
    "meta-llama/Meta-Llama-3.1-70B-Instruct": "llama-3.1-70b",
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "mixtral-8x7b",
}
MLENERGY_V2_GPUS = {"A100-SXM4-40GB": "a100-40gb", "H100 80GB HBM3": "h100"}
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
                      decode_seqs=round(batch), decode_ctx=round(batch * ctx),
                      prefill_masked_pairs=starts * prompt * (prompt - 1) / 2)


def mlenergy_points(data_dir: Path, profile: PerfProfile | None = None,
                    prompt_tokens: float = ARENA_PROMPT_TOKENS) -> list[Point]:
    path = data_dir / "anchors/mlenergy/v3_leaderboard/v3_configs_flat.csv"
    rows = list(csv.DictReader(path.open()))
    gpu = get_gpu("h100")
    out: list[Point] = []
    for model_id, key, tp in MLENERGY_SERIES:
        spec = get_model(key)
        prof = profile or load_profile("default")
        lat: LatencyModel = prof.latency_model(gpu, spec, tp)
        pwr: PowerModel = prof.power_model(gpu)
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


def mlenergy_v2_points(data_dir: Path, profile: PerfProfile | None = None,
                       prompt_tokens: float = ARENA_PROMPT_TOKENS) -> list[Point]:
    """ML.ENERGY v2 (2024; anchors/mlenergy/v2_2024/v2_llm_runs.csv): average TPOT vs batch of an older
    vLLM on A100-SXM4-40GB and H100 for the catalog's Llama-3.1-8B/70B and Mixtral-8x7B, chat task,
    at each run's TP. Its engine ran 2-3x slower than v3's (PROVENANCE.md), so these points calibrate
    the `mlenergy-v2-vllm` profile, not the default. Each point is the steady-state mean iteration,
    as for v3 (TPOT averages the decode steps and the prefills between them)."""
    path = data_dir / "anchors/mlenergy/v2_2024/v2_llm_runs.csv"
    prof = profile or load_profile("default")
    out: list[Point] = []
    for r in csv.DictReader(path.open()):
        key = MLENERGY_V2_MODELS.get(r["Model"])
        gpu_key = MLENERGY_V2_GPUS.get(r["gpu_dir"])
        if key is None or gpu_key is None or r["task"] != "chat" or r["family"] != "llm_text_generation":
            continue
        gpu, spec, tp = get_gpu(gpu_key), get_model(key), int(r["TP"])
        b = float(r["Avg BS (reqs)"])
        shape = steady_state_shape(b, prompt_tokens, float(r["Avg Output Tokens"]))
        if spec.kv_capacity_tokens(gpu.hbm_bytes, tp) < shape.decode_ctx:
            continue
        lat = prof.latency_model(gpu, spec, tp)
        t = lat.iteration(shape, gpu.clock_max_mhz).time_s
        out.append(Point(f"{spec.name} TP{tp} {gpu.name} (v2)", "tpot_ms", b, float(r["Avg TPOT (s)"]) * 1e3,
                         t * 1e3))
    return out


def vidur_points(data_dir: Path, profile: PerfProfile | None = None) -> list[Point]:
    """One layer's non-attention operators, priced without the fixed per-step, per-sequence and
    per-layer costs (Vidur times kernels, not steps)."""
    gpu = get_gpu("h100")
    p = (profile or load_profile("default")).latency
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
        lat = RooflineLatencyModel(gpu, one_layer, 1, eff_gemm=p.eff_gemm, eff_mem=p.eff_mem, gemm_p=p.gemm_p,
                                   overhead_s=0.0)
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


def splitwise_points(profile: PerfProfile | None = None) -> list[Point]:
    """Prompt power at full clock and the slowdowns at a 350 W cap on H100 (Llama-2-70B TP4)."""
    gpu = get_gpu("h100")
    spec = get_model("llama-2-70b")
    prof = profile or load_profile("default")
    lat = prof.latency_model(gpu, spec, 4)
    pwr = prof.power_model(gpu)
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


def markdown_report(data_dir: Path, profile: PerfProfile | None = None,
                    validation: dict[str, Any] | None = None) -> str:
    ml = mlenergy_points(data_dir, profile)
    vi = vidur_points(data_dir, profile)
    sw = splitwise_points(profile)
    v2 = mlenergy_v2_points(data_dir, load_profile("mlenergy-v2-vllm"))
    lines = [
        "# Calibration error",
        "",
        "Generated by `wattserve calibrate --data ../shared/data --validate docs/validate.json --out "
        "docs/calibration.md` (`make docs`). Do not edit by hand.",
        "",
        f"Prompt length assumed for lm-arena-chat: {ARENA_PROMPT_TOKENS} tokens (not published with the data).",
        "The default profile is fitted on H100 only. Every run on another GPU (H200, A100, A100-40GB, H100-PCIe,",
        "MI300X) under it is a transfer by peak specs, and every output says so (`calibration_warning` in",
        "summary.json and compare.json, UNCALIBRATED.txt beside compare.json, a warning line on stderr).",
        "MI300X in particular has no measurements behind it here: published vLLM-ROCm results run 3-4x",
        "slower than this transfer predicts.",
        "",
        "## Summary (default profile)",
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
    lines += ["", "## Shipped perf profiles (`--perf-profile`)", "",
              "| profile | engine | fitted on | fit error (median abs) | source |", "|---|---|---|---|---|"]
    for name in shipped():
        prof = load_profile(name)
        errs = ", ".join(f"{k} {v:.1%}" for k, v in prof.fit_error.items())
        lines.append(f"| {name} | {prof.engine} | {', '.join(prof.fitted_on)} | {errs} | {prof.source} |")
    lines += ["", "`mlenergy-v2-vllm` against its own data (ML.ENERGY v2, every third point held out of the fit):", "",
              "| series | batch | measured TPOT ms | predicted | error |", "|---|---|---|---|---|"]
    for p in v2:
        lines.append(f"| {p.series} | {p.x:.0f} | {p.measured:.3g} | {p.predicted:.3g} | {p.rel_error:+.1%} |")
    if validation is not None:
        lines += ["", "## Simulator vs runtime (`wattserve validate`)", "",
                  f"`wattserve validate --model {validation['model']} --out DIR` on this repository's CPU machine "
                  f"(2 cores): median absolute error **{validation['median_abs_error']:.1%}** over "
                  f"{len(validation['rows'])} rows (throughput, mean TTFT, mean TPOT, p99 TPOT per layout and rate). "
                  "Median error of the serving profiles' fits on held-out shape bins: "
                  + ", ".join(f"{n} {f['held_out_median_abs']:.1%}" for n, f in validation["profile_fit"].items())
                  + "; of the grid profile of the engine step alone (`profile --kind iterations`) on held-out rows: "
                  f"{validation['grid_profile_fit']['held_out_median_abs']:.1%}. Capacity (req/s) measured by a "
                  "burst on the runtime: " + ", ".join(f"{n} {v:.1f}" for n, v in
                                                       validation.get("runtime_capacity_rps", {}).items())
                  + "; predicted by the simulator: " + ", ".join(f"{n} {v:.1f}" for n, v in
                                                                 validation.get("sim_capacity_rps", {}).items())
                  + "." + (f" The same metrics on the profiling runs themselves (one run per load, whose step logs "
                           f"the profiles were fitted to): median error "
                           f"{validation['profiling_median_abs_error']:.1%}."
                           if "profiling_median_abs_error" in validation else ""), "",
                  "| layout | rate (req/s) | metric | runtime (mean of runs) | runtime min-max | sim | error |",
                  "|---|---|---|---|---|---|---|"]
        for r in validation["rows"]:
            lines.append(f"| {r['layout']} | {r['rate']:g} | {r['metric']} | {r['runtime']:.3g} "
                         f"| {r['runtime_min']:.3g}-{r['runtime_max']:.3g} | {r['sim']:.3g} | {r['abs_error']:.1%} |")
    lines += ["", "## Fitting a profile to your engine", "",
              "`wattserve calibrate --profile TABLE --out PROFILE` fits a profile's latency constants (the "
              "roofline's efficiencies; fixed costs per step, per sequence, per completed prompt, per layer, per "
              "all-reduce and per mixed step of prompt chunks beside decodes; the share of each prompt chunk's "
              "masked attention pairs the engine computes anyway) by robust least squares on relative error, holds out a share of the rows (`--holdout`, "
              "seeded) and prints the error on fitted and held-out rows by kind of step. TABLE is a CSV with one "
              "row per measured step shape:", "",
              "| column | meaning |", "|---|---|",
              "| engine, device, model, tp | what was measured: a catalog GPU (or `cpu`) and a catalog model |",
              "| prefill_tokens, prefill_seqs, prefill_ctx | prompt tokens computed in the step, the prompts it "
              "completes, the KV cached before those tokens |",
              "| decode_seqs, decode_ctx | sequences decoding one token each, their total context |",
              "| iter_ms | the step's time (a median of repeats, or one step of a serving log) |",
              "| clock_mhz, watts, prefill_attn_pairs | optional: the SM clock (empty: the top clock), mean power "
              "per GPU, the causal query-key pairs (empty: derived as if the prompts were equal) |",
              "| prefill_masked_pairs | optional: the pairs above each prompt chunk's causal diagonal, sum of "
              "chunk x (chunk - 1) / 2 (empty: derived the same way) |", "",
              "`wattserve profile --kind iterations --backend runtime` writes this table for our engine on a grid "
              "of shapes; `wattserve serve --step-log DIR` writes one per worker for every step it serves; "
              "`calibrate --profile VIDUR_FOLDER --model M --gpu G` imports a Vidur compute profile (mlp.csv and "
              "attention.csv).", ""]
    lines += ["", "## Known limits", "",
              "- One latency shape for every engine: a roofline per operator class plus fixed costs per step, "
              "sequence, layer, all-reduce and mixed step, and the share of masked attention pairs computed. "
              "Effects it cannot express (a CPU's cache hierarchy, kernel-selection cliffs) show up as fit "
              "error: on our CPU engine a 512-token prompt costs more per attention pair than a 256-token one "
              "(its score matrix outgrows the cache), and the fit priced it 3-29% fast in four runs of 2026-12-07.",
              "- The default profile's new terms (KV-read efficiency, per-sequence, per-layer and per-all-reduce "
              "costs) fit to about zero on ML.ENERGY v3 (`python scripts/fit_calibration.py --terms` moves the ITL "
              "error from 10.4% to 9.9%), so the default keeps its constants and every published figure stands.",
              "- Vidur's attention-kernel profiles (attention.csv) are not in the shared data, so its operator "
              "profiles cannot be imported as whole iterations here (`calibrate --profile VIDUR_FOLDER` says so).",
              "- Power is calibrated on H100 only; other GPUs scale H100's shape by their (TDP - idle) range.",
              "- Capacity of our CPU server: the validate table's rates stay below saturation (validate.json's "
              "`saturation` checks each: the runtime served at least 90% of the rate the requests arrived at). "
              "The serving profiles are fitted to the profiling loads (0.2, 0.5 and 0.8 of the capacity a burst "
              "measures), not to the burst: a step of dozens of sequences on 2 shared cores costs more than "
              "linearly in its batch (the router streams to every request at once), and a fit that held the "
              "burst's steps priced the measured runs' moderate batches too slow (colocated TPOT 22-54% too high "
              "in one run of three at commit 61f04d7). So the simulated capacity (`sim_capacity_rps`, a burst in "
              "the simulator) was 0.9-2.7x the runtime's in the runs of 2026-12-07; below saturation the profile holds.",
              "- 1P/1D is the weak layout: its p99 TPOT is underestimated by 10-60% and its mean TTFT by 10-36% "
              "at the higher rates in most runs. Two workers, the router and the load generator share 2 cores; "
              "when a burst of prompts keeps the prefill worker busy, the decode worker's steps slow down at that "
              "moment, and the simulator, which prices each worker's steps apart, spreads that cost over every "
              "step of its shape instead. At 0.7 of capacity the runtime also disagrees with itself (its two "
              "runs of the same requests differ by up to 2x in mean TPOT).",
              "- The runtime profile (`wattserve validate`) belongs to the machine it was taken on; this 2-core "
              "machine's speed drifts by tens of percent within minutes (the same command measured capacities "
              "of 38-74 req/s on 2026-12-07). validate alternates profiling and measured runs by rate, so drift "
              "lands on both, and the table reports each rate's spread over repeats. Runs of 2026-12-07 (median "
              "error over the table's rows): at 61f04d7, before the profiling loads replaced the burst in the "
              "fit, 4.7%, 4.1% and 17.6%; with the burst out of the fit (b389209) 6.0%, 6.4% and 11.9%; with "
              "the runs alternating (c77c45b) 7.0% and 4.9%; with the grid kept within the server's token budget "
              "(5bdb7b9) 4.5%. The grid profile's held-out error (11 held-out rows) was 6.1-11.7% in those eight "
              "runs, two above 10%, and 10.05% in the next. With the masked-pair share and the mixed-step cost in "
              "the model (63c725e on), six runs: grid held out 7.2%, 2.5%, 5.8%, 5.9%, 9.9% and 4.0%; "
              "serving-level median error 8.6%, 15.1%, 8.8%, 5.9%, 4.8% and 5.3% (the last, at 25db7fb, is the "
              "clean-clone `make validate` of the table above; 15.1%, 4.8% and 5.3% are clean clones). The same "
              "metrics on the profiling runs themselves (`profiling_median_abs_error`, from 55ad357 on): 4.5%, "
              "4.7% and 4.2%, against 5.9%, 4.8% and 5.3% on the measured runs of the same three. In the 15.1% "
              "run (before that field) the decode worker's own steps averaged "
              "1.08 ms token-weighted over the profiling runs (10-40 req/s; scripts/step_spread.py), where the "
              "measured runs' mean TPOT (15-35 req/s) was 1.18-1.80 ms; in the 8.8% run the colocated "
              "runtime's mean TPOT was 1.23 ms at 13.7 req/s and 0.90 ms at 22.9 req/s, faster at the higher "
              "rate.",
              "- The simulator prices every step of a shape the same; a real host does not. "
              "`python scripts/step_spread.py RUN` on the 15.1% run: each step's measured time over the "
              "fitted serving profile's prediction had quantiles p10 0.67, p50 0.89, p90 1.40, p99 2.07 (1P/1D "
              "decode worker, 24,613 steps) and p10 0.75, p50 0.92, p90 1.30, p99 1.75 (colocated, 15,433 "
              "steps). A request's TPOT averages its steps, but the spread is slow, not step-to-step: the "
              "autocorrelation of a step's log time over its shape bin's mean was 0.81 (decode) and 0.75 "
              "(colocated) at a lag of one step and 0.37 and 0.26 at 50 steps, so a slow period spans a "
              "request's whole decode and reaches p99 TPOT, which the simulator's steady steps do not. In the "
              "run of the table above (5.3%) the spread was smaller: p90 1.21 and 1.16, p99 2.00 and 1.68. A "
              "per-instance draw of step times was tried and not kept (no consistent gain over three runs); a "
              "slowdown shared by the workers of one host, what 1P/1D would need, is not built.",
              "", "## Every point (default profile)", "",
              "| series | quantity | batch / tokens | measured | predicted | error |", "|---|---|---|---|---|---|"]
    for p in ml + vi + sw:
        lines.append(f"| {p.series} | {p.quantity} | {p.x:g} | {p.measured:.3g} | {p.predicted:.3g} "
                     f"| {p.rel_error:+.1%} |")
    return "\n".join(lines) + "\n"
