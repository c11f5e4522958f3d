"""The run summary, with `vllm bench serve` field names where one exists.

vLLM's names (vllm/benchmarks/serve.py): completed, failed, duration, total_input_tokens,
total_output_tokens, request_throughput, output_throughput, total_token_throughput,
request_goodput, mean/median/std/p99 of ttft_ms, tpot_ms, itl_ms and e2el_ms. Ours add SLO
attainment, energy and power. TPOT per request is (e2e - ttft) / (output - 1), as vLLM computes it;
ITL statistics cover every gap between consecutive tokens of every request.

Energy by phase: while a step runs, its power goes to prefill and decode in proportion to each
phase's share of the step's modelled time (each phase timed alone at the step's clock; a step of
one phase gives it all), and power drawn with nothing to run is idle energy. The three sum to
gpu_energy_j.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wattserve.metrics.power_series import cluster_power, integrate
from wattserve.results.records import COMPLETED, FAILED, RequestRecords
from wattserve.results.sim_result import SimResult

PERCENTILES = (50, 90, 99)


def slo_met(res: SimResult, ttft_ms: float | np.ndarray | None, tpot_ms: float | None) -> np.ndarray:
    """Which requests completed within the SLOs; `ttft_ms` may be one bound per request (RAPID-Serve's
    TTFT grows with the prompt)."""
    return records_met(res.records, ttft_ms, tpot_ms)


def records_met(r: RequestRecords, ttft_ms: float | np.ndarray | None, tpot_ms: float | None) -> np.ndarray:
    """`slo_met` on the records alone, so a run still under way can be read (the planner's model
    stops a candidate once its misses decide it)."""
    ok = r.status == COMPLETED
    if ttft_ms is not None:
        ok &= r.ttft * 1e3 <= ttft_ms
    if tpot_ms is not None:
        tpot = r.tpot
        ok &= np.isnan(tpot) | (tpot * 1e3 <= tpot_ms)
    return ok


def _stats(prefix: str, values_ms: np.ndarray, out: dict[str, Any]) -> None:
    v = values_ms[~np.isnan(values_ms)]
    if len(v) == 0:
        for k in ("mean", "median", "std", *(f"p{p}" for p in PERCENTILES)):
            out[f"{k}_{prefix}_ms"] = None
        return
    out[f"mean_{prefix}_ms"] = float(v.mean())
    out[f"median_{prefix}_ms"] = float(np.median(v))
    out[f"std_{prefix}_ms"] = float(v.std())
    for p in PERCENTILES:
        out[f"p{p}_{prefix}_ms"] = float(np.percentile(v, p))


def summarize(res: SimResult, ttft_ms: float | None, tpot_ms: float | None, wall_time_s: float) -> dict[str, Any]:
    r = res.records
    done = r.status == COMPLETED
    duration = res.end_s
    in_tok = int(r.prompt[done].sum())
    out_tok = int(r.output[done].sum())
    met = slo_met(res, ttft_ms, tpot_ms)
    energy = sum(g.energy_j for g in res.gpus)
    t, w = cluster_power(res.gpus)
    s: dict[str, Any] = {
        "completed": int(done.sum()),
        "failed": int((r.status == FAILED).sum()),
        "duration": duration,
        "total_input_tokens": in_tok,
        "total_output_tokens": out_tok,
        "request_throughput": done.sum() / duration if duration > 0 else 0.0,
        "output_throughput": out_tok / duration if duration > 0 else 0.0,
        "total_token_throughput": (in_tok + out_tok) / duration if duration > 0 else 0.0,
        "request_goodput": met.sum() / duration if duration > 0 else 0.0,
    }
    _stats("ttft", np.where(done, r.ttft * 1e3, np.nan), s)
    _stats("tpot", np.where(done, r.tpot * 1e3, np.nan), s)
    h = res.itl_hist
    s["mean_itl_ms"] = h.mean * 1e3 if h.total else None
    s["median_itl_ms"] = h.quantile(0.5) * 1e3 if h.total else None
    for p in PERCENTILES:
        s[f"p{p}_itl_ms"] = h.quantile(p / 100) * 1e3 if h.total else None
    _stats("e2el", np.where(done, r.e2el * 1e3, np.nan), s)
    s.update({
        "slo_ttft_ms": ttft_ms,
        "slo_tpot_ms": tpot_ms,
        "slo_attainment": float(met.mean()) if len(met) else 0.0,
        "gpu_energy_j": energy,
        "prefill_energy_j": sum(g.prefill_energy_j for g in res.gpus),
        "decode_energy_j": sum(g.decode_energy_j for g in res.gpus),
        "idle_energy_j": sum(g.idle_energy_j for g in res.gpus),
        "gpu_energy_from_series_j": integrate(t, w, duration),
        "gpu_avg_power_w": energy / duration if duration > 0 else 0.0,
        "max_cluster_power_w": float(w.max()) if len(w) else 0.0,
        "sum_power_caps_w": float(sum(g.cap_w for g in res.gpus)),
        "output_toks_per_joule": out_tok / energy if energy > 0 else 0.0,
        "joules_per_output_token": energy / out_tok if out_tok else None,
        "num_gpus": len(res.gpus),
        "preemptions": int(sum(i.preemptions for i in res.instances)),
        "kv_peak_usage": max(i.kv_peak_blocks / i.kv_blocks for i in res.instances),
        "sim_events": res.events,
        "wall_time_s": wall_time_s,
        "modelled": True,
    })
    return s


def header(s: dict[str, Any], title: str) -> str:
    """`title` with what the run was: the scenario's name, its workload, and its budget and policy
    (or that it ran without one), so that two tables side by side say which run is which."""
    parts = [str(s.get("scenario", "default"))]
    if s.get("workload"):
        parts.append(str(s["workload"]))
    if s.get("budget_w") is not None:
        parts.append(f"budget {s['budget_w']:,.0f} W, policy {s.get('policy')}")
    else:
        parts.append("no budget")
    return f"{title}: {', '.join(parts)}"


def terminal_table(s: dict[str, Any], title: str) -> str:
    """The summary as `vllm bench serve` prints it; the header names the run (see `header`). Wall
    time is summary.json's own `wall_time_s`, so screen and file agree."""
    def f(v: Any, nd: int = 2) -> str:
        return "n/a" if v is None else (f"{v:,.{nd}f}" if isinstance(v, float) else f"{v:,}")

    rows = [
        ("Successful requests", f(s["completed"])),
        ("Failed requests", f(s["failed"])),
        ("Duration (s, simulated)", f(s["duration"])),
        ("Request throughput (req/s)", f(s["request_throughput"])),
        ("Output token throughput (tok/s)", f(s["output_throughput"], 1)),
        ("SLO attainment", f"{s['slo_attainment']:.1%} (TTFT {f(s['slo_ttft_ms'], 0)} ms, "
                           f"TPOT {f(s['slo_tpot_ms'], 0)} ms)"),
        ("Mean / P99 TTFT (ms)", f"{f(s['mean_ttft_ms'])} / {f(s['p99_ttft_ms'])}"),
        ("Mean / P99 TPOT (ms)", f"{f(s['mean_tpot_ms'])} / {f(s['p99_tpot_ms'])}"),
        ("Mean / P99 ITL (ms)", f"{f(s['mean_itl_ms'])} / {f(s['p99_itl_ms'])}"),
        ("Mean / P99 E2E latency (ms)", f"{f(s['mean_e2el_ms'], 1)} / {f(s['p99_e2el_ms'], 1)}"),
        ("GPU energy (kJ)", f(s["gpu_energy_j"] / 1e3, 1)),
        ("Avg / max cluster power (W)", f"{f(s['gpu_avg_power_w'], 0)} / {f(s['max_cluster_power_w'], 0)} "
                                        f"(caps sum {f(s['sum_power_caps_w'], 0)})"),
        ("Output tokens per joule", f(s["output_toks_per_joule"], 3)),
    ]
    if "budget_breaches" in s:
        rows.append(("Budget breaches / gap mean, max (W)",
                     f"{s['budget_breaches']} / {f(s['budget_gap_mean_w'], 0)}, {f(s['budget_gap_max_w'], 0)}"))
    rows.append(("Wall time (s)", f(s["wall_time_s"])))
    width = max(len(k) for k, _ in rows) + 2
    bar = "=" * (width + 40)
    lines = [f"{(' ' + header(s, title) + ' '):=^{len(bar)}}"]
    lines += [f"{k:<{width}}{v}" for k, v in rows]
    lines.append(bar)
    return "\n".join(lines)
