"""`wattserve compare`: every policy of a scenario across a sweep of request rates.

Jobs run as tasks on an executor (experiments/executors.py: the local process pool, or Ray), the
nested searches as tasks of their own. Outputs: compare.json (every run; the peak-rate
runs also carry their power/cap/role timelines and every actuation with its time), compare.md (a
table), attainment_vs_rate_<workload>.png, and power_roles_<workload>.png for the peak rate.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from wattserve.experiments.executors import Executor, ProcessExecutor
from wattserve.experiments.run import Job, run_jobs
from wattserve.experiments.scenarios import NamedScenario


def rate_at_attainment(rates: list[float], attain: list[float], target: float) -> float | None:
    """Highest rate at which attainment still meets the target, interpolating linearly between
    the last rate that meets it and the next that does not (the "80% attainment point")."""
    pts = sorted(zip(rates, attain))
    if not pts or pts[0][1] < target:
        return None
    best = pts[0][0]
    for (r0, a0), (r1, a1) in zip(pts, pts[1:]):
        if a0 >= target > a1:
            return r0 + (r1 - r0) * (a0 - target) / (a0 - a1)
        if a1 >= target:
            best = r1
    return best


def run_compare(sc: NamedScenario, policies: list[str], workloads: list[str], rates: dict[str, list[float]],
                seed: int, data_dir: str | None, jobs: int | None = None,
                progress: Callable[[int, int], None] | None = None, executor: Executor | None = None) -> dict[str, Any]:
    todo = [Job(sc, p, w, r, seed, data_dir, timelines=(r == max(rates[w]) and sc.arm(p).experiment != "oracle"))
            for w in workloads for r in rates[w] for p in policies]
    results = run_jobs(todo, executor or ProcessExecutor(jobs), progress)
    summary = []
    for w in workloads:
        for p in policies:
            rows = [r for r in results if r["workload"] == w and r["policy"] == p]
            rs = [r["rate"] for r in rows]
            att = [r["slo_attainment"] for r in rows]
            summary.append({"workload": w, "policy": p,
                            "rate_at_target": rate_at_attainment(rs, att, sc.attainment_target),
                            "above_sweep": min(att[rs.index(max(rs))], 1.0) >= sc.attainment_target,
                            "attainment_at_peak": next(r["slo_attainment"] for r in rows if r["rate"] == max(rs))})
    out = {
        "scenario": sc.name,
        "budget_w": sc.budget_w,
        "gpu": sc.gpu,
        "model": sc.model,
        "num_gpus": sc.num_gpus,
        "slo_ttft_ms": sc.slo_ttft_ms,
        "slo_tpot_ms": sc.slo_tpot_ms,
        "attainment_target": sc.attainment_target,
        "rates": rates,
        "max_sum_caps_w": max(r["max_sum_caps_w"] for r in results),
        "budget_held": all(r["max_sum_caps_w"] <= sc.budget_w + 1e-6 and not r.get("budget_breaches")
                           for r in results),
        "summary": summary,
        "runs": results,
    }
    if sc.budget_events:
        out["budget_events"] = {w: sc.budget_events[w] for w in workloads}
        out["budget_breaches"] = sum(r["budget_breaches"] for r in results)
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = [f"# compare: {res['scenario']}", "",
             f"{res['num_gpus']}x {res['gpu'].upper()}, {res['model']}, budget {res['budget_w']:,.0f} W, "
             f"SLO TTFT {res['slo_ttft_ms']:g} ms / TPOT {res['slo_tpot_ms']:g} ms. "
             f"Peak sum of caps in force over all runs: {res['max_sum_caps_w']:,.0f} W "
             f"({'within' if res['budget_held'] else 'OVER'} budget).", ""]
    target = int(res["attainment_target"] * 100)
    lines += [f"| workload | policy | rate at {target}% attainment (req/s) | attainment at peak rate |",
              "|---|---|---|---|"]
    for s in res["summary"]:
        r = "below sweep" if s["rate_at_target"] is None else f"{s['rate_at_target']:.1f}"
        if s["above_sweep"]:
            r = f">= {s['rate_at_target']:.1f} (sweep max)"
        lines.append(f"| {s['workload']} | {s['policy']} | {r} | {s['attainment_at_peak']:.2f} |")
    lines += ["", "| workload | rate | policy | attainment | per phase | energy (kJ) | qps/W | "
              "max sum caps (W) | role changes | cap changes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        phases = " / ".join(f"{x:.2f}" for x in r.get("phase_attainment", []))
        lines.append(f"| {r['workload']} | {r['rate']:g} | {r['policy']} | {r['slo_attainment']:.2f} | {phases} | "
                     f"{r['gpu_energy_j'] / 1e3:,.0f} | {r['qps_per_w']:.4f} | {r['max_sum_caps_w']:,.0f} | "
                     f"{r.get('role_changes', 0)} | {r.get('cap_changes', 0)} |")
    if "budget_events" in res:
        lines += ["", "Budget events: " + "; ".join(f"{w}: `{e}`" for w, e in res["budget_events"].items())
                  + f". Breaches of the moving budget over all runs: {res['budget_breaches']}.", "",
                  "| workload | rate | policy | attainment before / during / after the drop | breaches |",
                  "|---|---|---|---|---|"]

        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f}"
        for r in res["runs"]:
            lines.append(f"| {r['workload']} | {r['rate']:g} | {r['policy']} | {f(r['attainment_before_drop'])} / "
                         f"{f(r['attainment_during_drop'])} / {f(r['attainment_after_drop'])} | "
                         f"{r['budget_breaches']} |")
    return "\n".join(lines) + "\n"


def plots(res: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    workloads = sorted({r["workload"] for r in res["runs"]})
    for w in workloads:
        fig, ax = plt.subplots(figsize=(7, 4))
        for p in dict.fromkeys(r["policy"] for r in res["runs"]):
            rows = sorted((r["rate"], r["slo_attainment"]) for r in res["runs"]
                          if r["workload"] == w and r["policy"] == p)
            ax.plot([x for x, _ in rows], [y for _, y in rows], marker="o", label=p,
                    ls="--" if p == "oracle" else "-")
        ax.axhline(res["attainment_target"], color="gray", ls=":", lw=1)
        ax.set_xlabel("request rate (req/s)")
        ax.set_ylabel("SLO attainment")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{res['scenario']}: {w}, budget {res['budget_w']:,.0f} W")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"attainment_vs_rate_{w}.png", dpi=110)
        plt.close(fig)

        peak = max(r["rate"] for r in res["runs"] if r["workload"] == w)
        runs = [r for r in res["runs"] if r["workload"] == w and r["rate"] == peak and "timelines" in r]
        if not runs:
            continue
        fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
        for r in runs:
            tl = r["timelines"]
            a1.plot(tl["t"], tl["power_w"], lw=1.2, label=f"{r['policy']} power")
            a2.step(tl["t"], tl["prefill_instances"], where="mid", lw=1.2, label=r["policy"])
        a1.axhline(res["budget_w"], color="tab:red", ls="--", lw=1.2, label="budget")
        a1.set_ylabel("cluster power (W)")
        a1.legend(fontsize=7, ncol=3)
        a1.grid(alpha=0.3)
        a2.set_ylabel("prefill instances")
        a2.yaxis.set_major_locator(MaxNLocator(integer=True))
        a2.set_xlabel("time (s)")
        a2.legend(fontsize=7, ncol=3)
        a2.grid(alpha=0.3)
        fig.suptitle(f"{res['scenario']}: {w} at {peak:g} req/s")
        fig.tight_layout()
        fig.savefig(out / f"power_roles_{w}.png", dpi=110)
        plt.close(fig)
