"""What `compare --scenario biscale-h100` writes besides compare.json: a table per workload and
rate, energy per phase per policy, and the clock over time of one prefill and one decode GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.0%}"


def _placement(plans: list[dict[str, Any]]) -> str:
    def one(p: dict[str, Any]) -> str:
        clk = "" if p["prefill_mhz"] is None and p["decode_mhz"] is None else \
            f" @{p['prefill_mhz'] or 'max'}/{p['decode_mhz'] or 'max'}"
        return f"{p['prefill']}xTP{p['prefill_tp']}+{p['decode']}xTP{p['decode_tp']}{clk}"
    return "; ".join(dict.fromkeys(one(p) for p in plans))


def markdown(res: dict[str, Any]) -> str:
    lines = [f"# compare: {res['scenario']}", "",
             f"{res['num_gpus']}x {res['gpu'].upper()} ({res['gpus_per_node']} per node), {res['model']}, "
             f"the first {res['duration_s']:g} s of each trace in windows of {res['window_s']:g} s; SLO TTFT "
             f"{res['slo_ttft_ms']:g} ms and TPOT {res['slo_tpot_ms']:g} ms, both counted. Energy is modelled "
             "(simulator), prefill/decode are busy energy by phase, idle is powered GPUs with nothing to run.", "",
             "| workload | rate | policy | attainment | prefill kJ | decode kJ | idle kJ | total kJ | J/token | "
             "prefill vs distserve | decode vs distserve | total vs distserve | placement @ base clocks |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        jpt = "-" if r["joules_per_output_token"] is None else f"{r['joules_per_output_token']:.2f}"
        lines.append(f"| {r['workload']} | {r['rate']:g} | {r['policy']} | {r['slo_attainment']:.3f} | "
                     f"{r['prefill_energy_j'] / 1e3:,.0f} | {r['decode_energy_j'] / 1e3:,.0f} | "
                     f"{r['idle_energy_j'] / 1e3:,.0f} | {r['gpu_energy_j'] / 1e3:,.0f} | {jpt} | "
                     f"{_pct(r['prefill_energy_vs_distserve'])} | {_pct(r['decode_energy_vs_distserve'])} | "
                     f"{_pct(r['gpu_energy_vs_distserve'])} | {_placement(r['placements'])} |")
    return "\n".join(lines) + "\n"


def plots(res: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = res["runs"]
    cells = list(dict.fromkeys((r["workload"], r["rate"]) for r in runs))
    policies = list(dict.fromkeys(r["policy"] for r in runs))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cells)), 4.5))
    width = 0.8 / max(1, len(policies))
    colors = {"prefill_energy_j": "tab:blue", "decode_energy_j": "tab:orange", "idle_energy_j": "tab:gray"}
    by = {(r["workload"], r["rate"], r["policy"]): r for r in runs}
    for j, pol in enumerate(policies):
        for i, cell in enumerate(cells):
            r = by.get((*cell, pol))
            if r is None:
                continue
            bottom = 0.0
            for key, color in colors.items():
                v = r[key] / 1e3
                ax.bar(i + (j - (len(policies) - 1) / 2) * width, v, width * 0.95, bottom=bottom, color=color,
                       alpha=1.0 - 0.25 * j, label=f"{key.split('_')[0]} ({pol})" if i == 0 else None)
                bottom += v
    ax.set_xticks(range(len(cells)), [f"{w}\n{r:g} req/s" for w, r in cells], fontsize=8)
    ax.set_ylabel("energy (kJ, modelled)")
    ax.set_title(f"{res['scenario']}: energy per phase, bars left to right: {', '.join(policies)}")
    ax.legend(fontsize=7, ncol=len(policies))
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out / "energy_per_phase.png", dpi=110)
    plt.close(fig)

    shown = [r for r in runs if r["policy"] == "biscale" and r["clock_trace"]]
    if not shown:
        return
    r = shown[len(shown) // 2]
    fig, axes = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    for ax, role in zip(axes, ("prefill", "decode"), strict=True):
        tr = r["clock_trace"].get(role)
        if tr:
            ax.step(tr["t_s"], tr["mhz"], where="post", lw=0.8)
        ax.set_ylabel(f"{role} GPU SM clock (MHz)")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time in the first window (s)")
    fig.suptitle(f"{res['scenario']}: biscale, {r['workload']} at {r['rate']:g} req/s")
    fig.tight_layout()
    fig.savefig(out / "clock_over_time.png", dpi=110)
    plt.close(fig)
