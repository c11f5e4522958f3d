"""One function builds a simulation run from a scenario: the workload, the cluster and, when the
scenario has a power policy, the control plane (SimBackend, BudgetGuard, ControlLoop) around it.

`simulate`, `compare` and the tests all build runs here, so that a policy sees the same cluster,
budget and SLOs whichever of them asked for the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wattserve.catalog import get_gpu
from wattserve.control import BudgetGuard, ControlLoop, make_controller
from wattserve.control.loop import Controller
from wattserve.control.registry import NEEDS_MODEL, SWITCHES_CONCURRENT
from wattserve.results.sim_result import SimResult
from wattserve.schema.scenario import Scenario
from wattserve.schema.workload import LengthConfig, WorkloadConfig
from wattserve.seam import ActuationLog, BudgetSignal, StepSignal
from wattserve.sim.backend import SimBackend
from wattserve.sim.cluster import CAP_SETTLE_S, Cluster
from wattserve.workload.synthetic import AZURE_CONV, LengthDist, SyntheticSpec, generate
from wattserve.workload.traces import load_trace
from wattserve.workload.workload import Workload


@dataclass
class SimRun:
    """A built, not yet run, simulation: `run()` it once; `guard`, `log` and `budget` exist with a policy."""

    scenario: Scenario
    workload: Workload
    cluster: Cluster
    guard: BudgetGuard | None = None
    log: ActuationLog | None = None
    budget: BudgetSignal | None = None
    """The budget over the run, with a policy."""
    target: StepSignal | None = None
    """The throughput target over the run (tok/s), when the scenario gives one."""
    controller: Controller | None = None
    """The policy, with a policy (a planner keeps its decisions and planning times on it)."""

    def run(self, progress: Callable[[float], None] | None = None, until: float | None = None) -> SimResult:
        return self.cluster.run(progress=progress, until=until)


def build_run(scenario: Scenario, workload: Workload | None = None,
              controller_params: dict[str, Any] | None = None) -> SimRun:
    """The run `scenario` describes; `workload` replaces the scenario's own (named compare workloads).

    Under a policy every GPU starts at the uniform share of the lowest budget of the guard's first
    look-ahead (twice the cap settle time), clamped to the GPU's maximum cap: caps in force at t=0
    need no settling, so a budget trace that drops before the guard could lower caps in time is
    still held. The policy's start() then sets the caps it wants through the guard."""
    wl = workload if workload is not None else build_workload(scenario.workload, scenario.seed)
    cluster_cfg = scenario.cluster
    ctl = scenario.control
    slo = scenario.slo
    slo_s = (slo.ttft_ms and slo.ttft_ms / 1e3, slo.tpot_ms and slo.tpot_ms / 1e3)
    if ctl.policy is None:
        return SimRun(scenario, wl, Cluster(cluster_cfg, wl, slo_s=slo_s))
    gpu = get_gpu(cluster_cfg.gpu)
    budget = ctl.budget_signal(floor_w=cluster_cfg.num_gpus * gpu.cap_min_w)
    assert budget is not None
    target = ctl.target_signal()
    controller = _controller(scenario, budget, controller_params)
    start_w = budget.min_over(0.0, 2.0 * CAP_SETTLE_S)
    cluster_cfg = cluster_cfg.model_copy(update={
        "power_cap_w": min(gpu.cap_max_w, start_w / cluster_cfg.num_gpus),
        "prefill_cap_w": None, "decode_cap_w": None})
    cluster = Cluster(cluster_cfg, wl, slo_s=slo_s, concurrent_switch=_concurrent(ctl.policy, controller_params))
    backend = SimBackend(cluster, budget, *slo_s, target=target)
    log = ActuationLog()
    guard = BudgetGuard(backend, budget, log)
    ControlLoop(backend, guard, [controller]).start()
    return SimRun(scenario, wl, cluster, guard, log, budget, target, controller)


def _controller(scenario: Scenario, budget: BudgetSignal, params: dict[str, Any] | None) -> Controller:
    """The one place a run's controller is made, so a policy that needs more gets it here for
    simulate, compare and the tests alike: pals and batch-only their fitted models' table,
    static-cap the cap that fits the lowest budget of the run."""
    ctl, c = scenario.control, scenario.cluster
    assert ctl.policy is not None
    kw = dict(params or {})
    table = ctl.operating_table(c.gpu, c.model, c.tp, getattr(c, "ep", 1))
    if table is not None:
        kw.setdefault("table", table)
    if ctl.policy == "static-cap":
        kw.setdefault("cap_w", budget.floor() / c.num_gpus)
    if ctl.policy in NEEDS_MODEL:
        from wattserve.experiments.plan_sim import planner_models

        slo = scenario.slo
        for k, v in planner_models(c, slo.ttft_ms and slo.ttft_ms / 1e3, slo.tpot_ms and slo.tpot_ms / 1e3,
                                   scenario.seed, _concurrent(ctl.policy, params)).items():
            kw.setdefault(k, v)
    return make_controller(ctl.policy, **kw)


def _concurrent(policy: str | None, params: dict[str, Any] | None) -> bool:
    """Whether the policy moves instances into and out of concurrent (`planner-concurrent`, or the
    planner asked to with its `concurrent`): the cluster and the planner's model are then built to
    switch into and out of concurrent."""
    return policy in SWITCHES_CONCURRENT or bool((params or {}).get("concurrent"))


def _length_dist(cfg: LengthConfig, trace_values: Any) -> LengthDist:
    if cfg.kind == "fixed":
        return LengthDist("fixed", value=int(cfg.value or 1))
    if cfg.kind == "uniform":
        return LengthDist("uniform", low=cfg.low, high=cfg.high)
    if cfg.kind == "lognormal":
        return LengthDist("lognormal", mu=float(cfg.mu or 0), sigma=float(cfg.sigma or 0), low=cfg.low, high=cfg.high)
    if cfg.kind == "quantiles":
        return LengthDist("quantiles", values=tuple(cfg.values or ()), percents=tuple(cfg.percents or ()))
    return LengthDist("empirical", values=tuple(int(v) for v in trace_values))


def build_workload(w: WorkloadConfig, seed: int) -> Workload:
    """A trace (cut to its window, rescaled, repeated), or a synthetic workload.

    With a trace and a length kind of 'trace', the trace supplies lengths to resample while
    arrivals are synthetic; otherwise the trace supplies everything."""
    trace = load_trace(w.trace, w.trace_format) if w.trace else None
    resample = trace is not None and "trace" in (w.prompt.kind, w.output.kind)
    if trace is not None and not resample:
        wl = trace
        if w.window_start_s or w.duration_s:
            end = w.window_start_s + w.duration_s if w.duration_s else None
            wl = wl.window(w.window_start_s, end)
        if w.rate:
            wl = wl.rescale(w.rate)
        if w.num_requests:
            wl = wl.head(w.num_requests)
        return wl.repeat(w.repeat)
    prompt_src = trace.prompt_tokens if trace is not None else None
    output_src = trace.output_tokens if trace is not None else None
    spec = SyntheticSpec(
        rate=w.rate or AZURE_CONV.rate,
        prompt=_length_dist(w.prompt, prompt_src),
        output=_length_dist(w.output, output_src),
        arrival=w.arrival,
        burstiness=w.burstiness,
        duration_s=None if w.num_requests else (w.duration_s or AZURE_CONV.duration_s),
        num_requests=w.num_requests,
        name="synthetic" if w.trace else AZURE_CONV.name,
    )
    return generate(spec, seed).repeat(w.repeat)
