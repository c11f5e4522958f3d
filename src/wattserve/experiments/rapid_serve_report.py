"""What `compare --scenario rapid-serve-mi300x` writes besides compare.json: the goodput and
saturation-throughput table (each as a ratio to chunked-512, as RAPID-Serve reports), the runs with
their p95 TTFT and ITL, and attainment against rate per workload."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def markdown(res: dict[str, Any]) -> str:
    lines = [f"# compare: {res['scenario']}", "",
             f"{res['num_gpus']}x {res['gpu'].upper()}, {res['requests_per_run']} requests per run; SLO TTFT 1 s per "
             f"1,000 prompt tokens (each request's own), ITL (TPOT) 100 ms for Llama-3.1-70B and 50 ms for "
             f"Mixtral-8x7B; goodput is the highest swept rate with attainment >= {res['attainment_target']:.0%}. "
             "Modelled (simulator).", "",
             "| model | workload | policy | goodput req/s | vs chunked-512 | throughput at saturation tok/s | "
             "vs chunked-512 |", "|---|---|---|---|---|---|---|"]
    for g in res["goodput"]:
        lines.append(f"| {g['model']} | {g['workload']} | {g['policy']} | {g['goodput_rps']:g} | "
                     f"{_x(g['goodput_vs_chunked_512'])} | {g['saturation_output_tok_s']:,.0f} | "
                     f"{_x(g['throughput_vs_chunked_512'])} |")
    lines += ["", "| model | workload | rate | policy | attainment | output tok/s | p95 TTFT ms | p95 ITL ms | "
              "p95 TPOT ms |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        lines.append(f"| {r['model']} | {r['workload']} | {r['rate']:g} | {r['policy']} | {r['slo_attainment']:.3f} | "
                     f"{r['output_tok_s']:,.0f} | {_ms(r['p95_ttft_ms'])} | {_ms(r['p95_itl_ms'])} | "
                     f"{_ms(r['p95_tpot_ms'])} |")
    return "\n".join(lines) + "\n"


def plots(res: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = res["runs"]
    panels = list(dict.fromkeys((r["model"], r["workload"]) for r in runs))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), squeeze=False)
    for ax, (model, workload) in zip(axes[0], panels, strict=True):
        for policy in dict.fromkeys(r["policy"] for r in runs):
            pts = sorted((r["rate"], r["slo_attainment"]) for r in runs
                         if r["model"] == model and r["workload"] == workload and r["policy"] == policy)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=policy)
        ax.axhline(res["attainment_target"], color="gray", lw=0.8, ls="--")
        ax.set_title(f"{model}, {workload}", fontsize=9)
        ax.set_xlabel("rate (req/s)")
        ax.set_ylabel("SLO attainment")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "attainment.png", dpi=110)
    plt.close(fig)
