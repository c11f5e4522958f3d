"""`compare --scenario biscale-h100`: DistServe's placement against BiScale's two tiers.

The scenario follows BiScale's evaluation ("BiScale: Energy-Efficient Disaggregated LLM Serving via
Phase-Aware Placement and DVFS", arXiv 2602.18755): 16 H100s (two nodes of eight) serving
Llama-3.3-70B (llama-3.1-70b here: the same architecture) on the Azure LLM 2023 conversation and
code traces, rescaled to a few rates. BiScale's SLO values are not in the paper; TTFT 600 ms and
TPOT 100 ms are the defaults in its code release, as the issue states.

The trace is cut into windows (`window_s`, default 5 minutes). Before each window, tier 1 plans from
the previous window with traffic (the first window from its own statistics, standing in for the
profile a running deployment would have) and the policy runs that window with its plan:
- `distserve`: DistServe's placement (fewest GPUs meeting the target at the maximum clock), no DVFS;
- `place-only`: BiScale's tier 1 (placement and base clocks, locked per phase), no tier 2;
- `biscale`: the same placement, clocks unlocked, the tier-2 governors (`BiScaleGovernor`: prefill
  MPC, decode slack) starting from the base clocks.
Each window is simulated on its own, from an empty cluster until its last request finishes; GPUs
outside the placement are powered off (no idle energy), and the switch between windows (weights
reload, drain) is not charged, as in BiScale's own accounting of tier-1 decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from wattserve.errors import UsageError
from wattserve.experiments.biscale_placement import (
    Decision,
    Evaluated,
    Placement,
    SearchSpace,
    WindowStats,
    choose,
)
from wattserve.experiments.executors import Executor, ProcessExecutor
from wattserve.experiments.rate_sweep import RateSweep
from wattserve.experiments.workloads import azure_trace
from wattserve.governors.biscale import BiScaleGovernor
from wattserve.metrics.summary import slo_met
from wattserve.results.records import COMPLETED
from wattserve.results.sim_result import SimResult
from wattserve.schema.cluster import ClusterConfig
from wattserve.seam.governor import StepGovernor
from wattserve.sim.cluster import Cluster
from wattserve.workload import Workload, load_trace

POLICIES = ("distserve", "place-only", "biscale")
TRACES = {"azure-conv": "conv", "azure-code": "code"}


@dataclass(frozen=True)
class BiScaleScenario(RateSweep):
    name: str = "biscale-h100"
    gpu: str = "h100"
    model: str = "llama-3.1-70b"
    num_gpus: int = 16
    gpus_per_node: int = 8
    sweep: tuple[tuple[str, tuple[float, ...]], ...] = (("azure-conv", (4.0, 8.0, 12.0, 16.0)),
                                                        ("azure-code", (1.0, 2.0, 3.0)))
    """(workload, rates in req/s): the code trace's prompts are twice as long, so its sweep is lower."""
    window_s: float = 300.0
    duration_s: float = 600.0
    slo_ttft_ms: float = 600.0
    slo_tpot_ms: float = 100.0
    policies: tuple[str, ...] = POLICIES
    perf_profile: str = "default"
    """The perf profile every run of the scenario uses (compare --perf-profile)."""

    def space(self) -> SearchSpace:
        return SearchSpace(self.gpu, self.model, self.num_gpus, self.gpus_per_node,
                           slo_ttft_s=self.slo_ttft_ms / 1e3, slo_tpot_s=self.slo_tpot_ms / 1e3,
                           perf_profile=self.perf_profile)

    def base(self) -> ClusterConfig:
        return ClusterConfig(gpu=self.gpu, model=self.model, tp=4, prefill=1, decode=1,
                             gpus_per_node=self.gpus_per_node, perf_profile=self.perf_profile)


def trace_workload(name: str, rate: float, duration_s: float, data_dir: str) -> Workload:
    """The trace rescaled to `rate` req/s, its first `duration_s` seconds."""
    if name not in TRACES:
        raise UsageError(f"unknown workload {name!r}; allowed: {', '.join(TRACES)}", "--workloads")
    trace = load_trace(str(azure_trace(data_dir, TRACES[name])))
    return trace.rescale(rate).window(0.0, duration_s)


def _governor(policy: str, pl: Placement) -> Callable[[], StepGovernor] | None:
    if policy != "biscale":
        return None
    return lambda: BiScaleGovernor(prefill_base_mhz=pl.prefill_mhz, decode_base_mhz=pl.decode_mhz)


def simulate(sc: BiScaleScenario, pl: Placement, wl: Workload, policy: str) -> SimResult:
    cfg = pl.cluster(sc.base(), lock=policy == "place-only")
    return Cluster(cfg, wl, governor=_governor(policy, pl),
                   slo_s=(sc.slo_ttft_ms / 1e3, sc.slo_tpot_ms / 1e3)).run()


def _evaluator(sc: BiScaleScenario, wl: Workload, policy: str) -> Callable[[Iterable[Placement]], list[Evaluated]]:
    def evaluate(cands: Iterable[Placement]) -> list[Evaluated]:
        out = []
        for pl in cands:
            res = simulate(sc, pl, wl, policy)
            met = slo_met(res, sc.slo_ttft_ms, sc.slo_tpot_ms)
            out.append(Evaluated(pl, float(met.mean()) if len(met) else 1.0, sum(g.energy_j for g in res.gpus)))
        return out
    return evaluate


def _clock_seconds(res: SimResult, role: str, into: dict[int, float]) -> None:
    """Seconds each GPU of `role` spent at each SM clock (idle spans at the clock last set)."""
    roles = {i.iid: i.role for i in res.instances}
    for g in res.gpus:
        if roles[g.instance] != role:
            continue
        edges = np.append(g.clock_times, res.end_s)
        for mhz, dt in zip(g.clock_values, np.diff(edges), strict=True):
            into[int(mhz)] = into.get(int(mhz), 0.0) + float(dt)


def _clock_trace(res: SimResult, role: str, t0: float, limit: int = 4000) -> dict[str, list[float]]:
    """The clock over time of the first GPU of `role`, shifted by `t0` (thinned to `limit` points)."""
    roles = {i.iid: i.role for i in res.instances}
    g = next(g for g in res.gpus if roles[g.instance] == role)
    step = max(1, len(g.clock_times) // limit)
    return {"t_s": [float(t) + t0 for t in g.clock_times[::step]],
            "mhz": [float(c) for c in g.clock_values[::step]]}


def run_cell(sc: BiScaleScenario, workload: str, rate: float, data_dir: str,
             policies: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every policy on one workload at one rate, window by window."""
    wl = trace_workload(workload, rate, sc.duration_s, data_dir)
    n_win = max(1, int(np.ceil(sc.duration_s / sc.window_s)))
    windows = [wl.between(k * sc.window_s, (k + 1) * sc.window_s) for k in range(n_win)]
    space = sc.space()
    acc: dict[str, dict[str, Any]] = {p: {"met": 0, "n": 0, "out": 0, "prefill": 0.0, "decode": 0.0, "idle": 0.0,
                                          "plans": [], "clocks": {"prefill": {}, "decode": {}}, "trace": {}}
                                      for p in policies}
    for k, win in enumerate(windows):
        prev = next((w for w in reversed(windows[:k]) if len(w)), win)
        stats = WindowStats.of(prev, sc.window_s)
        plans: dict[str, Decision] = {}
        if "distserve" in policies:
            plans["distserve"] = choose(space, stats, _evaluator(sc, prev, "distserve"), "gpus")
        if {"place-only", "biscale"} & set(policies):
            tier1 = choose(space, stats, _evaluator(sc, prev, "place-only"), "energy")
            plans["place-only"] = plans["biscale"] = tier1
        for policy in policies:
            d = plans[policy]
            a = acc[policy]
            a["plans"].append({"window": k, "start_s": k * sc.window_s} | d.as_dict())
            if len(win) == 0:
                continue
            res = simulate(sc, d.placement, win, policy)
            met = slo_met(res, sc.slo_ttft_ms, sc.slo_tpot_ms)
            done = res.records.status == COMPLETED
            a["met"] += int(met.sum())
            a["n"] += len(met)
            a["out"] += int(res.records.output[done].sum())
            a["prefill"] += sum(g.prefill_energy_j for g in res.gpus)
            a["decode"] += sum(g.decode_energy_j for g in res.gpus)
            a["idle"] += sum(g.idle_energy_j for g in res.gpus)
            for role in ("prefill", "decode"):
                _clock_seconds(res, role, a["clocks"][role])
                if k == 0:
                    a["trace"][role] = _clock_trace(res, role, 0.0)
    rows = []
    for policy in policies:
        a = acc[policy]
        total = a["prefill"] + a["decode"] + a["idle"]
        rows.append({
            "policy": policy, "workload": workload, "rate": rate,
            "slo_attainment": a["met"] / a["n"] if a["n"] else 0.0,
            "requests": a["n"],
            "prefill_energy_j": a["prefill"], "decode_energy_j": a["decode"], "idle_energy_j": a["idle"],
            "gpu_energy_j": total,
            "joules_per_output_token": total / a["out"] if a["out"] else None,
            "output_tokens": a["out"],
            "placements": a["plans"],
            "clock_seconds": {role: {str(m): s for m, s in sorted(c.items())} for role, c in a["clocks"].items()},
            "clock_trace": a["trace"],
            "modelled": True,
        })
    return rows


def _cell(args: tuple[BiScaleScenario, str, float, str, tuple[str, ...]]) -> list[dict[str, Any]]:
    return run_cell(*args)


def run_biscale_compare(sc: BiScaleScenario, data_dir: str, rates: dict[str, list[float]], policies: list[str],
                        jobs: int | None, progress: Callable[[int, int], None] | None = None,
                        executor: Executor | None = None) -> dict[str, Any]:
    """compare.json's content: a row for every (workload, rate, policy), cells in a process pool,
    in a fixed order, and each row's savings against `distserve` at the same workload and rate."""
    cells = [(sc, w, r, data_dir, tuple(policies)) for w, rs in rates.items() for r in rs]
    rows = [row for out in (executor or ProcessExecutor(jobs)).map(_cell, cells, progress) for row in out]
    base = {(r["workload"], r["rate"]): r for r in rows if r["policy"] == "distserve"}
    for r in rows:
        d = base.get((r["workload"], r["rate"]))
        for key in ("prefill_energy_j", "decode_energy_j", "gpu_energy_j"):
            r[f"{key[:-2]}_vs_distserve"] = r[key] / d[key] - 1 if d and d[key] else None
    return {"scenario": sc.name, "kind": "biscale", "gpu": sc.gpu, "model": sc.model, "num_gpus": sc.num_gpus,
            "gpus_per_node": sc.gpus_per_node, "window_s": sc.window_s, "duration_s": sc.duration_s,
            "slo_ttft_ms": sc.slo_ttft_ms, "slo_tpot_ms": sc.slo_tpot_ms, "policies": list(policies),
            "search_space": asdict(sc.space()), "runs": rows, "modelled": True}


def recommend(gpu: str, model: str, num_gpus: int, slo_ttft_ms: float, slo_tpot_ms: float,
              requests: list[tuple[float, int, int]], window_s: float) -> dict[str, Any]:
    """Tier 1 for a live deployment: the placement and base clocks BiScale would choose for the
    requests `(arrival s, prompt tokens, output tokens)` seen in the last `window_s` seconds,
    simulated on `gpu` and the catalog `model`. A plain function of plain data, so `serve` can run
    it in a separate process."""
    sc = BiScaleScenario(gpu=gpu, model=model, num_gpus=num_gpus, gpus_per_node=8,
                         slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms, window_s=window_s)
    if requests:
        arr = np.array([r[0] for r in requests], dtype=float)
        order = np.argsort(arr, kind="stable")
        arr = arr[order] - arr.min()
        prompts = np.array([max(1, r[1]) for r in requests], dtype=np.int64)[order]
        outputs = np.array([max(1, r[2]) for r in requests], dtype=np.int64)[order]
        wl = Workload(arr, prompts, outputs, "live")
    else:
        wl = Workload(np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), "live")
    d = choose(sc.space(), WindowStats.of(wl, window_s), _evaluator(sc, wl, "place-only"), "energy")
    return d.as_dict() | {"requests": len(wl), "window_s": window_s}
