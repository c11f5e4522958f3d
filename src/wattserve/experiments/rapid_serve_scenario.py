"""`compare --scenario rapid-serve-mi300x`: concurrent prefill/decode against chunked prefill and 4P+4D.

The scenario follows RAPID-Serve's evaluation ("RAPID-Serve: Resource-efficient and Accelerated P/D
Intra-GPU Disaggregation", Masood, Gaur, Jayasena, arXiv 2601.11822): 8x MI300X serving
Llama-3.1-70B (TP 8 for the concurrent and chunked layouts; 4 prefill + 4 decode GPUs at TP 4 for the
disaggregated one) and Mixtral-8x7B (no disaggregated baseline, as in the paper), on three workloads
named for the paper's datasets, synthetic with their published average prompt lengths: LMSYS (about
2K tokens), arXiv summarisation (about 8K) and LooGLE (about 20K). The paper's output lengths are not
in the text we have; we chose typical answers for each kind (chat 256, a summary 256, LooGLE's short
QA answers 64), and prompt lengths uniform within +-25% of the average.

SLOs as the paper states them: ITL <= 100 ms for Llama-3.1-70B and 50 ms for Mixtral (we count each
request's TPOT, as DistServe's attainment does), TTFT about 1 s per 1,000 prompt tokens (each
request's own bound). Goodput is DistServe's: the highest swept rate at which at least 95% of requests
meet both (`attainment_target`); throughput at saturation is the output tokens per second at the
highest swept rate, where every layout is saturated.

Arms: `chunked-512` and `chunked-2048` (Sarathi-style hybrid batching, vLLM's chunked prefill with
that token budget per iteration), `disagg-4p4d` (vLLM-style disaggregation), and `rapid-serve` (the
concurrent layout with the Adaptive Resource Manager, `governors/rapid_serve.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from wattserve.experiments.executors import Executor, ProcessExecutor
from wattserve.experiments.rate_sweep import RateSweep
from wattserve.metrics.summary import slo_met
from wattserve.results.records import COMPLETED
from wattserve.schema.cluster import ClusterConfig, EngineConfig
from wattserve.sim.cluster import Cluster
from wattserve.workload import LengthDist, SyntheticSpec, Workload, generate

POLICIES = ("chunked-512", "chunked-2048", "disagg-4p4d", "rapid-serve")
PROMPTS = {"lmsys": 2048, "arxiv": 8192, "loogle": 20480}
OUTPUTS = {"lmsys": 256, "arxiv": 256, "loogle": 64}
ITL_SLO_MS = {"llama-3.1-70b": 100.0, "mixtral-8x7b": 50.0}


@dataclass(frozen=True)
class RapidServeScenario(RateSweep):
    name: str = "rapid-serve-mi300x"
    gpu: str = "mi300x"
    num_gpus: int = 8
    models: tuple[str, ...] = ("llama-3.1-70b", "mixtral-8x7b")
    sweep: tuple[tuple[str, tuple[float, ...]], ...] = (
        ("lmsys", (2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 20.0, 24.0)),
        ("arxiv", (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0)),
        ("loogle", (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 2.0, 2.4)),
    )
    """(workload, rates in req/s) from light load to past saturation for Llama-3.1-70B."""
    mixtral_rate_scale: float = 5.0
    """Mixtral-8x7B computes about a fifth of Llama-3.1-70B's FLOPs per token (13B of 47B parameters
    active), so its sweep is 5x."""
    requests: int = 400
    ttft_s_per_1k_tokens: float = 1.0
    attainment_target: float = 0.95
    policies: tuple[str, ...] = POLICIES
    perf_profile: str = "default"
    """The perf profile every run of the scenario uses (compare --perf-profile)."""

    def rates_for(self, workload: str, model: str) -> tuple[float, ...]:
        scale = self.mixtral_rate_scale if model == "mixtral-8x7b" else 1.0
        return tuple(r * scale for r in self.rates[workload])

    def arms(self, model: str) -> tuple[str, ...]:
        """The policies run for `model`: no disaggregated baseline for Mixtral, as in the paper."""
        return tuple(p for p in self.policies if not (p == "disagg-4p4d" and model == "mixtral-8x7b"))

    def cluster(self, policy: str, model: str) -> ClusterConfig:
        base: dict[str, Any] = {"gpu": self.gpu, "model": model, "prefill": 0, "decode": 0,
                                "perf_profile": self.perf_profile}
        if policy == "disagg-4p4d":
            half = self.num_gpus // 2
            return ClusterConfig(**{**base, "tp": half, "prefill": 1, "decode": 1})
        if policy.startswith("chunked-"):
            budget = int(policy.split("-")[1])
            return ClusterConfig(**base, tp=self.num_gpus, colocated=1,
                                 engine=EngineConfig(colocated_token_budget=budget))
        if policy == "rapid-serve":
            return ClusterConfig(**base, tp=self.num_gpus, concurrent=1,
                                 engine=EngineConfig(governor="rapid-serve"))
        raise ValueError(f"unknown policy {policy!r}")

    def workload(self, name: str, rate: float, seed: int) -> Workload:
        p, o = PROMPTS[name], OUTPUTS[name]
        return generate(SyntheticSpec(rate=rate, num_requests=self.requests, duration_s=None,
                                      prompt=LengthDist("uniform", low=p * 3 // 4, high=p * 5 // 4),
                                      output=LengthDist("uniform", low=o * 3 // 4, high=o * 5 // 4), name=name),
                        seed)


def run_cell(sc: RapidServeScenario, model: str, workload: str, rate: float, policy: str,
             seed: int) -> dict[str, Any]:
    """One run: the workload at `rate` on `policy`'s layout, with each request's SLO."""
    wl = sc.workload(workload, rate, seed)
    itl_ms = ITL_SLO_MS[model]
    ttft_mean_s = PROMPTS[workload] / 1000 * sc.ttft_s_per_1k_tokens
    res = Cluster(sc.cluster(policy, model), wl, slo_s=(ttft_mean_s, itl_ms / 1e3)).run()
    r = res.records
    done = r.status == COMPLETED
    ok = slo_met(res, wl.prompt_tokens * sc.ttft_s_per_1k_tokens, itl_ms)
    tpot = r.tpot
    ttft_ms = r.ttft[done] * 1e3
    tpot_ms = tpot[done & ~np.isnan(tpot)] * 1e3
    out_tokens = int(wl.output_tokens[done].sum())
    span = res.end_s - float(wl.arrival_s[0]) if len(wl) else 0.0
    return {
        "model": model, "workload": workload, "rate": rate, "policy": policy,
        "slo_attainment": float(ok.mean()) if len(ok) else 0.0,
        "p95_ttft_ms": float(np.percentile(ttft_ms, 95)) if len(ttft_ms) else None,
        "p95_itl_ms": float(res.itl_hist.quantile(0.95) * 1e3) if res.itl_hist.total else None,
        "p95_tpot_ms": float(np.percentile(tpot_ms, 95)) if len(tpot_ms) else None,
        "output_tok_s": out_tokens / span if span > 0 else 0.0, "output_tokens": out_tokens,
        "completed": int(done.sum()), "requests": len(wl),
        "gpu_energy_j": float(sum(g.prefill_energy_j + g.decode_energy_j + g.idle_energy_j for g in res.gpus)),
        "slo_ttft_ms_per_1k_tokens": sc.ttft_s_per_1k_tokens * 1e3, "slo_itl_ms": itl_ms,
        "modelled": True,
    }


def _cell(args: tuple[RapidServeScenario, str, str, float, str, int]) -> dict[str, Any]:
    return run_cell(*args)


def goodput(runs: list[dict[str, Any]], sc: RapidServeScenario) -> list[dict[str, Any]]:
    """One entry per (workload, policy, model): the highest swept rate whose attainment reaches the
    target (0 if none) and the output throughput at the highest swept rate, each also as a ratio to
    chunked-512's."""
    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in runs:
        cells.setdefault((r["workload"], r["policy"], r["model"]), []).append(r)
    out = []
    for (w, p, m), rows in cells.items():
        rows.sort(key=lambda r: r["rate"])
        met = [r["rate"] for r in rows if r["slo_attainment"] >= sc.attainment_target]
        out.append({"workload": w, "policy": p, "model": m, "goodput_rps": max(met) if met else 0.0,
                    "saturation_output_tok_s": rows[-1]["output_tok_s"]})
    base = {(g["workload"], g["model"]): g for g in out if g["policy"] == "chunked-512"}
    for g in out:
        b = base.get((g["workload"], g["model"]))
        g["goodput_vs_chunked_512"] = g["goodput_rps"] / b["goodput_rps"] if b and b["goodput_rps"] else None
        g["throughput_vs_chunked_512"] = (g["saturation_output_tok_s"] / b["saturation_output_tok_s"]
                                          if b and b["saturation_output_tok_s"] else None)
    return out


def run_rapid_serve_compare(sc: RapidServeScenario, models: list[str], workloads: list[str],
                            rates: dict[str, list[float]] | None, policies: list[str], seed: int, jobs: int | None,
                            progress: Callable[[int, int], None] | None = None,
                            executor: Executor | None = None) -> dict[str, Any]:
    """compare.json's content: a run for every (model, workload, rate, policy), in a process pool,
    in a fixed order, and the `goodput` list. `rates` replaces each workload's sweep (for every model)."""
    cells = [(sc, m, w, r, p, seed) for m in models for w in workloads
             for r in (rates[w] if rates is not None else sc.rates_for(w, m))
             for p in policies if p in sc.arms(m)]
    runs = (executor or ProcessExecutor(jobs)).map(_cell, cells, progress, chunksize=4)
    return {"scenario": sc.name, "kind": "rapid-serve", "gpu": sc.gpu, "num_gpus": sc.num_gpus,
            "models": models, "workloads": workloads, "policies": policies, "seed": seed,
            "requests_per_run": sc.requests, "attainment_target": sc.attainment_target,
            "prompt_tokens": {w: PROMPTS[w] for w in workloads}, "output_tokens": {w: OUTPUTS[w] for w in workloads},
            "runs": runs, "goodput": goodput(runs, sc), "modelled": True}


__all__ = ["POLICIES", "RapidServeScenario", "run_rapid_serve_compare"]
