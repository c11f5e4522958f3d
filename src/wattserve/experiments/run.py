"""One arm of a comparison (a policy on a layout, or the oracle) on one workload at one rate, as
tasks an executor can spread: the nested searches (RAPID's static cap split, the oracle's static
candidates per window) are tasks of their own, and a static-split arm's final run is a second-stage
task that waits for its split's candidates. Every task gets its workload as a shared handle
(`executors.share`), so it is built once on the driver and never re-read from a data path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wattserve.experiments.build import build_run
from wattserve.experiments.executors import Executor, ProcessExecutor, resolve
from wattserve.experiments.oracle import oracle_cells, oracle_combine, oracle_metrics
from wattserve.experiments.run_metrics import drop_metrics, metrics, timelines
from wattserve.experiments.scenarios import NamedScenario
from wattserve.experiments.static_split import pick_split, split_cells, split_metrics
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


@dataclass(frozen=True)
class Task:
    """One simulation: `kind` run (an arm's run, with `split` caps for a static-split arm), split (one
    candidate of RAPID's static split) or oracle (one static candidate of one window)."""

    kind: str
    job: Job
    workload: Any = field(compare=False)
    """The job's workload, as a shared handle."""
    split: tuple[float, float] | None = None
    cell: Any = None


def run_task(task: Task) -> dict[str, Any]:
    job = task.job
    sc = job.scenario
    wl = resolve(task.workload)
    if task.kind == "split":
        return split_metrics(sc, wl, *task.cell)
    if task.kind == "oracle":
        return oracle_metrics(sc, wl, task.cell)
    arm = sc.arm(job.policy)
    windows = phase_bounds(wl, job.workload)
    out: dict[str, Any] = {"policy": arm.label, "workload": job.workload, "rate": job.rate, "layout": arm.layout}
    params: dict[str, Any] = {}
    if task.split is not None:
        cp, cd = task.split
        params = {"prefill_cap_w": cp, "decode_cap_w": cd}
        out["split_w"] = [cp, cd]
    run = build_run(sc.scenario(arm, job.seed, job.workload), wl, params)
    res = run.run()
    assert run.guard is not None and run.log is not None
    out.update(metrics(sc, res, windows))
    if sc.budget_events:
        assert run.budget is not None
        out.update(drop_metrics(run.budget, sc, res))
    out["guard_peak_committed_w"] = run.guard.peak_committed_w
    out["role_changes"] = int(sum(i.role_changes for i in res.instances))
    out["cap_changes"] = run.log.count("cap")
    out["clock_changes"] = run.log.count("clock")
    out["step_target_changes"] = run.log.count("steptarget")
    out["batch_limit_changes"] = run.log.count("batchlimit")
    out["refused"] = sum(1 for e in run.log.entries if e.status == "refused")
    planning = getattr(run.controller, "planning_s", None)
    if planning:
        decisions = run.controller.decisions  # type: ignore[union-attr]
        out["planning_ms_p50"] = float(np.median(planning)) * 1e3
        out["planning_ms_max"] = max(planning) * 1e3
        cpu = run.controller.planning_cpu_s  # type: ignore[union-attr]
        out["planning_cpu_ms_p50"] = float(np.median(cpu)) * 1e3
        out["planning_cpu_ms_max"] = max(cpu) * 1e3
        out["plans"] = len(planning)
        out["plans_reused"] = sum(1 for d in decisions if d.get("reused"))
        out["plan_moves"] = sum(1 for a, b in zip(decisions, decisions[1:]) if a["prefill"] != b["prefill"])
    if job.timelines:
        out["timelines"] = timelines(res)
        out["actuations"] = [{"time_s": e.time_s, "kind": e.kind, "target": e.target, "value": e.value,
                              "status": e.status, "effective_s": e.effective_s, "note": e.note}
                             for e in run.log.entries]
    return out


def run_jobs(jobs: list[Job], executor: Executor | None = None,
             progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Every job's row, in order: workloads built here once and shared, the first stage (runs,
    split candidates, oracle candidates) and the second (static-split runs at their chosen split) on
    the executor, the oracle's choice made here. `progress` counts tasks over both stages."""
    ex = executor or ProcessExecutor(1)
    built: dict[tuple[str, float, int, str | None], Any] = {}
    lens: dict[tuple[str, float, int, str | None], tuple[int, list[tuple[int, int]]]] = {}
    for j in jobs:
        key = (j.workload, j.rate, j.seed, j.data_dir)
        if key not in built:
            wl = make_workload(j.workload, j.rate, j.seed, j.data_dir)
            built[key] = ex.share(wl)
            lens[key] = (len(wl), phase_bounds(wl, j.workload))
    first: list[Task] = []
    plan: list[tuple[str, list[int]]] = []
    for j in jobs:
        key = (j.workload, j.rate, j.seed, j.data_dir)
        arm = j.scenario.arm(j.policy)
        start = len(first)
        if arm.experiment == "oracle":
            first += [Task("oracle", j, built[key], cell=c) for c in oracle_cells(j.scenario, lens[key][1])]
            plan.append(("oracle", list(range(start, len(first)))))
        elif arm.policy == "static-split":
            first += [Task("split", j, built[key], cell=c) for c in split_cells(j.scenario)]
            plan.append(("split", list(range(start, len(first)))))
        else:
            first.append(Task("run", j, built[key]))
            plan.append(("run", [start]))
    n_second = sum(1 for kind, _ in plan if kind == "split")
    total = len(first) + n_second

    def tick(offset: int) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda done, _n: progress(offset + done, total))

    out1 = ex.map(run_task, first, tick(0))
    second: list[Task] = []
    for j, (kind, idx) in zip(jobs, plan, strict=True):
        if kind == "split":
            key = (j.workload, j.rate, j.seed, j.data_dir)
            cells = [first[i].cell for i in idx]
            second.append(Task("run", j, built[key], split=pick_split(j.scenario, cells, [out1[i] for i in idx])))
    out2 = iter(ex.map(run_task, second, tick(len(first))))
    rows: list[dict[str, Any]] = []
    for j, (kind, idx) in zip(jobs, plan, strict=True):
        if kind == "run":
            rows.append(out1[idx[0]])
        elif kind == "split":
            rows.append(next(out2))
        else:
            key = (j.workload, j.rate, j.seed, j.data_dir)
            n, windows = lens[key]
            row = {"policy": j.scenario.arm(j.policy).label, "workload": j.workload, "rate": j.rate}
            row.update(oracle_combine(j.scenario, n, windows, [first[i].cell for i in idx], [out1[i] for i in idx]))
            rows.append(row)
    return rows


def run_job(job: Job) -> dict[str, Any]:
    """One job's row, every task here."""
    return run_jobs([job])[0]
