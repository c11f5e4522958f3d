"""PNG plots: latency CDFs, and cluster power over time against the power limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wattserve.metrics.power_series import binned_average, cluster_power
from wattserve.results.records import COMPLETED
from wattserve.results.sim_result import SimResult
from wattserve.seam import StepSignal


def _pyplot():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_cdfs(path: Path, res: SimResult, ttft_ms: float | None, tpot_ms: float | None) -> None:
    plt = _pyplot()
    r = res.records
    done = r.status == COMPLETED
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    series = (("TTFT (ms)", r.ttft[done] * 1e3, ttft_ms), ("TPOT (ms)", r.tpot[done] * 1e3, tpot_ms),
              ("End-to-end latency (s)", r.e2el[done], None))
    for ax, (label, v, slo) in zip(axes, series):
        v = np.sort(v[~np.isnan(v)])
        if len(v):
            ax.plot(v, np.arange(1, len(v) + 1) / len(v), lw=1.6)
        if slo is not None:
            ax.axvline(slo, color="tab:red", ls="--", lw=1, label=f"SLO {slo:g} ms")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Latency CDFs: {res.config.num_gpus}x {res.config.gpu.upper()}, {res.config.model}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cluster_power_plot(path: Path, res: SimResult, budget_w: float | None = None,
                       budget: StepSignal | None = None) -> None:
    """The legend sits below the axes, where it can cover neither the budget line nor the power
    series; the averaging bin width is given in the legend. A budget that changes over the run
    (`budget`) is drawn as a step line over the run; a constant one as a flat line."""
    plt = _pyplot()
    t, w = cluster_power(res.gpus)
    bins = min(600, max(10, int(res.end_s)))
    centers, avg = binned_average(t, w, res.end_s, bins)
    width_s = res.end_s / bins if bins else 0.0
    fig, ax = plt.subplots(figsize=(10, 4.2))
    ax.step(t, w, where="post", lw=0.4, alpha=0.35, color="tab:blue", label="instantaneous")
    ax.plot(centers, avg, lw=1.6, color="tab:blue", label=f"average per {width_s:.3g} s bin")
    caps = sum(g.cap_w for g in res.gpus)
    if budget is not None and len(budget.times) > 1:
        bt = [x for x in budget.times if x < res.end_s]
        ax.step([*bt, res.end_s], [budget.at(x) for x in bt] + [budget.at(res.end_s)], where="post",
                color="tab:red", ls="--", lw=1.2, label=f"budget ({budget.floor():,.0f} to {budget.peak():,.0f} W)")
        budget_w = budget.peak()
    else:
        if budget is not None:
            budget_w = budget.peak()
        ax.axhline(budget_w if budget_w is not None else caps, color="tab:red", ls="--", lw=1.2,
                   label=(f"budget {budget_w:,.0f} W" if budget_w is not None
                          else f"power limit {caps:,.0f} W (sum of caps)"))
    ax.axhline(sum(g.idle_w for g in res.gpus), color="gray", ls=":", lw=1, label="all idle")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("cluster GPU power (W)")
    ax.set_ylim(0, max(caps, budget_w or 0.0, float(w.max()) if len(w) else 0.0) * 1.1)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=4, fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    fig.suptitle(f"Cluster power over time (modelled; averaged over {width_s:.3g} s bins)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
