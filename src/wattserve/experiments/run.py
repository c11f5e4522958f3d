"""One arm of a comparison (a policy on a layout, or the oracle) on one workload at one rate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wattserve.experiments.build import build_run
from wattserve.experiments.oracle import oracle
from wattserve.experiments.run_metrics import metrics, timelines
from wattserve.experiments.scenarios import NamedScenario
from wattserve.experiments.static_split import best_static_split
from wattserve.experiments.workloads import make_workload, phase_bounds


@dataclass(frozen=True)
class Job:
    scenario: NamedScenario
    policy: str
    """The arm's label (a row of compare.json)."""
    workload: str
    rate: float
    seed: int = 0
    data_dir: str | None = None
    timelines: bool = False


def run_job(job: Job) -> dict[str, Any]:
    sc = job.scenario
    arm = sc.arm(job.policy)
    wl = make_workload(job.workload, job.rate, job.seed, job.data_dir)
    windows = phase_bounds(wl, job.workload)
    out: dict[str, Any] = {"policy": arm.label, "workload": job.workload, "rate": job.rate}
    if arm.experiment == "oracle":
        out.update(oracle(sc, wl, windows))
        return out
    out["layout"] = arm.layout
    params: dict[str, Any] = {}
    if arm.policy == "static-split":
        cp, cd = best_static_split(sc, wl)
        params = {"prefill_cap_w": cp, "decode_cap_w": cd}
        out["split_w"] = [cp, cd]
    run = build_run(sc.scenario(arm, job.seed), wl, params)
    res = run.run()
    assert run.guard is not None and run.log is not None
    out.update(metrics(sc, res, windows))
    out["guard_peak_committed_w"] = run.guard.peak_committed_w
    out["role_changes"] = int(sum(i.role_changes for i in res.instances))
    out["cap_changes"] = run.log.count("cap")
    out["refused"] = sum(1 for e in run.log.entries if e.status == "refused")
    if job.timelines:
        out["timelines"] = timelines(res)
        out["actuations"] = [{"time_s": e.time_s, "kind": e.kind, "target": e.target, "value": e.value,
                              "status": e.status, "effective_s": e.effective_s, "note": e.note}
                             for e in run.log.entries]
    return out
