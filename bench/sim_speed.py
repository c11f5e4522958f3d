"""Simulator speed, measured as a user runs it: the `wattserve simulate` command, start-up included.

Runs the whole Azure LLM 2023 conversation trace (19,366 requests) on the default cluster (8x H100,
Llama-3.1-8B, 4 prefill + 4 decode), then the same trace repeated 10 times end to end, each in a fresh
process. Then the 1x trace again with a step governor that changes the SM clock every iteration
(`AlternatingClock`, here: full clock and 80% of it in turn, one iteration at a time), which turns
every closed-form decode run into single iterations: the cost of per-iteration control (BiScale's
DVFS). Then the 1x trace with BiScale's tier-2 governors attached (`simulate --governor biscale`:
prefill MPC and decode slack, arXiv 2602.18755), the issue's target being >= 4,000 requests per
wall second. The ungoverned, governed and biscale runs alternate, so all see the same machine. The
last line printed is one JSON object:
  requests, wall_s, requests_per_wall_s, peak_rss_mb (of the 1x run), wall_10x_s, scaling_ratio,
  governed_wall_s, governed_requests_per_wall_s, governed_peak_rss_mb, biscale_wall_s,
  biscale_requests_per_wall_s, biscale_peak_rss_mb, biscale_over_ungoverned (wall ratio).
Usage: python bench/sim_speed.py [--data ../shared/data] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TRACE = "traces/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"


class AlternatingClock:
    """Asks for the full clock and 80% of it in turn, one iteration at a time."""

    name = "alternating"

    def __init__(self) -> None:
        from wattserve.seam import StepDecision

        self.flip = False
        self.pair: tuple[object, object] | None = None
        self.make = StepDecision

    def decide(self, view: object) -> object:
        if self.pair is None:
            top = view.gpu.clock_max_mhz  # type: ignore[attr-defined]
            self.pair = (self.make(top, 1), self.make(int(top * 0.8), 1))
        self.flip = not self.flip
        return self.pair[self.flip]


def governed_child(trace: str) -> None:
    """Run the default cluster on the trace with AlternatingClock, as `simulate --json` would."""
    started = time.perf_counter()
    from wattserve.metrics.summary import summarize
    from wattserve.schema.cluster import ClusterConfig
    from wattserve.sim.cluster import Cluster
    from wattserve.workload.traces import load_trace

    wl = load_trace(trace)
    res = Cluster(ClusterConfig(), wl, governor=AlternatingClock).run()
    s = summarize(res, 1000.0, 50.0, time.perf_counter() - started)
    s["num_prompts"] = len(wl)
    s["clock_changes"] = int(sum(len(g.clock_times) - 1 for g in res.gpus))
    s["iterations"] = int(sum(i.iterations for i in res.instances))
    print(json.dumps(s, default=float))


def run_once(trace: Path, repeat: int, governed: bool = False, governor: str | None = None
             ) -> tuple[float, float, dict]:
    cmd = [sys.executable, "-m", "wattserve", "simulate", "--trace", str(trace), "--repeat", str(repeat), "--json"]
    if governor is not None:
        cmd += ["--governor", governor]
    if governed:
        cmd = [sys.executable, __file__, "--governed-child", str(trace)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"simulate failed: {err.strip()}")
    return wall, usage.ru_maxrss / 1024.0, json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--repeats", type=int, default=3, help="runs of each size; the fastest counts")
    ap.add_argument("--governed-child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.governed_child:
        governed_child(a.governed_child)
        return
    trace = Path(a.data) / TRACE
    if not trace.is_file():
        sys.exit(f"trace not found: {trace}")
    one, gov, bis = [], [], []
    for _ in range(a.repeats):
        one.append(run_once(trace, 1))
        gov.append(run_once(trace, 1, governed=True))
        bis.append(run_once(trace, 1, governor="biscale"))
    ten = [run_once(trace, 10) for _ in range(a.repeats)]
    w1 = min(r[0] for r in one)
    wg = min(r[0] for r in gov)
    w10 = min(r[0] for r in ten)
    wb = min(r[0] for r in bis)
    n = one[0][2]["num_prompts"]
    g0 = gov[0][2]
    print(f"governed: {g0['clock_changes']} clock changes over {g0['iterations']} iterations")
    print(f"biscale / ungoverned wall: {wb / w1:.2f} (fastest of {a.repeats} alternating runs each)")
    for label, runs in (("1x", one), ("10x", ten), ("governed", gov), ("biscale", bis)):
        print(f"{label}: wall {[round(r[0], 3) for r in runs]} s, peak RSS {max(r[1] for r in runs):.0f} MB, "
              f"completed {runs[0][2]['completed']}, failed {runs[0][2]['failed']}")
    print(json.dumps({
        "requests": n,
        "wall_s": round(w1, 3),
        "requests_per_wall_s": round(n / w1, 1),
        "peak_rss_mb": round(max(r[1] for r in one), 1),
        "wall_10x_s": round(w10, 3),
        "peak_rss_10x_mb": round(max(r[1] for r in ten), 1),
        "scaling_ratio": round(w10 / w1, 2),
        "governed_wall_s": round(wg, 3),
        "governed_requests_per_wall_s": round(n / wg, 1),
        "governed_peak_rss_mb": round(max(r[1] for r in gov), 1),
        "biscale_wall_s": round(wb, 3),
        "biscale_requests_per_wall_s": round(n / wb, 1),
        "biscale_peak_rss_mb": round(max(r[1] for r in bis), 1),
        "biscale_over_ungoverned": round(wb / w1, 2),
    }))


if __name__ == "__main__":
    main()
