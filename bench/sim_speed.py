"""Simulator speed, measured as a user runs it: the `wattserve simulate` command, start-up included.

Runs the whole Azure LLM 2023 conversation trace (19,366 requests) on the default cluster (8x H100,
Llama-3.1-8B, 4 prefill + 4 decode), then the same trace repeated 10 times end to end, each in a fresh
process. The last line printed is one JSON object:
  requests, wall_s, requests_per_wall_s, peak_rss_mb (of the 1x run), wall_10x_s, scaling_ratio.
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


def run_once(trace: Path, repeat: int) -> tuple[float, float, dict]:
    cmd = [sys.executable, "-m", "wattserve", "simulate", "--trace", str(trace), "--repeat", str(repeat), "--json"]
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
    a = ap.parse_args()
    trace = Path(a.data) / TRACE
    if not trace.is_file():
        sys.exit(f"trace not found: {trace}")
    one = [run_once(trace, 1) for _ in range(a.repeats)]
    ten = [run_once(trace, 10) for _ in range(a.repeats)]
    w1 = min(r[0] for r in one)
    w10 = min(r[0] for r in ten)
    n = one[0][2]["num_prompts"]
    for label, runs in (("1x", one), ("10x", ten)):
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
    }))


if __name__ == "__main__":
    main()
