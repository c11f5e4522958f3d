"""What `compare --scenario pals-moe` writes besides compare.json: a table and two timelines per
deployment (target vs served throughput, budget vs draw), every policy on one axis."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def markdown(res: dict[str, Any]) -> str:
    t0, t1, level = res["cut"]
    lines = [f"# compare: {res['scenario']}", "",
             f"{res['num_gpus']} GPUs as TP{res['tp']} instances (EP {res['ep']}), a backlog of chat requests, "
             f"{res['duration_s']:g} s; budget every GPU at its maximum cap, cut to {level:.0%} from {t0:g} s to "
             f"{t1:g} s. QoS windows of {res['window_s']:g} s after a {res['warmup_s']:g} s warm-up. "
             f"Budget held at every instant in every run: {'yes' if res['budget_held'] else 'NO'}.", "",
             "| deployment | policy | tokens/J | vs tdp | QoS violations | feasible windows | budget breaches | "
             "gap during cut | max sum caps (W) |", "|---|---|---|---|---|---|---|---|---|"]
    tdp = {r["deployment"]: r["output_toks_per_joule"] for r in res["runs"] if r["policy"] == "tdp"}
    for r in res["runs"]:
        base = tdp.get(r["deployment"])
        vs = f"{r['output_toks_per_joule'] / base - 1:+.1%}" if base else "-"
        lines.append(f"| {r['deployment']} | {r['policy']} | {r['output_toks_per_joule']:.3f} | {vs} | "
                     f"{r['qos_violations']} | {r['qos_windows_feasible']} of {r['qos_windows']} | "
                     f"{r['budget_breaches']} | {r['budget_gap_cut_frac']:.1%} | {r['max_sum_caps_w']:,.0f} |")
    lines += ["", "Over every deployment: " + "; ".join(
        f"{p} {t['qos_violations']} QoS violations in {t['qos_windows_feasible']} feasible windows, "
        f"{t['budget_breaches']} budget breaches" for p, t in res["totals"].items()) + "."]
    return "\n".join(lines) + "\n"


def plots(res: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for label in dict.fromkeys(r["deployment"] for r in res["runs"]):
        runs = [r for r in res["runs"] if r["deployment"] == label]
        fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
        tl0 = runs[0]["timelines"]
        a1.step(tl0["t"], [x / 1e3 for x in tl0["target_tok_s"]], where="mid", color="black", ls="--", lw=1.2,
                label="target")
        a2.step(tl0["t"], tl0["budget_w"], where="mid", color="tab:red", ls="--", lw=1.2, label="budget")
        for r in runs:
            tl = r["timelines"]
            a1.plot(tl["t"], [x / 1e3 for x in tl["tok_s"]], lw=1.1, label=r["policy"])
            a2.plot(tl["t"], tl["draw_w"], lw=1.1, label=r["policy"])
        a1.set_ylabel("output tokens/s (thousands)")
        a2.set_ylabel("cluster draw (W)")
        a2.set_xlabel("time (s)")
        for a in (a1, a2):
            a.grid(alpha=0.3)
            a.legend(fontsize=7, ncol=5)
        fig.suptitle(f"{res['scenario']}: {label}")
        fig.tight_layout()
        fig.savefig(out / f"target_budget_{label}.png", dpi=110)
        plt.close(fig)
