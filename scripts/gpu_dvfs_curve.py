"""Measure power, speed and energy per operation against the locked SM clock on a real GPU.

BiScale's savings (arXiv 2602.18755) come from running prefill (compute-bound) and decode
(memory-bound) below the maximum clock. The simulator's power model (perf/power.py) was calibrated
at full clock only; this script measures the curve it should follow, through wattserve's own NVML
agent: for each clock, a compute-bound bf16 GEMM (8192^3) and a memory-bound bf16 GEMV-like batch
(a 16 x 8192 activation times 8192 x 8192 weights, repeated over 8 weight matrices so it streams
from HBM), run for `--seconds` each under `nvmlDeviceSetGpuLockedClocks`, with power sampled every
50 ms after a 0.5 s warm-up. Clocks are restored in a `finally`.

Usage: python scripts/gpu_dvfs_curve.py [--gpu 0] [--seconds 3] [--clocks 345,660,990,1320,1650,1980]
Last line printed: one JSON object, {"rows": [{kind, clock_mhz, power_w, clock_seen_mhz,
ops_per_s, joules_per_op}, ...]}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from typing import Any

import torch

from wattserve.runtime.power.nvml import NvmlGpuPower


def workload(kind: str) -> Any:
    if kind == "gemm":
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        return lambda: a @ b
    x = torch.randn(16, 8192, device="cuda", dtype=torch.bfloat16)
    ws = [torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(8)]

    def gemv() -> None:
        for w in ws:
            x @ w
    return gemv


def measure(agent: NvmlGpuPower, i: int, kind: str, seconds: float) -> dict[str, float]:
    op = workload(kind)
    for _ in range(3):
        op()
    torch.cuda.synchronize()
    samples: list[tuple[float, float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.perf_counter()
        while not stop.is_set():
            samples.append((time.perf_counter() - t0, agent.power_w(i), agent.clock_mhz(i)))
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < seconds:
        for _ in range(4):
            op()
        n += 4
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    s = [x for x in samples if x[0] >= 0.5] or samples
    power = statistics.fmean(x[1] for x in s)
    return {"power_w": power, "clock_seen_mhz": statistics.fmean(x[2] for x in s), "ops_per_s": n / wall,
            "joules_per_op": power * wall / n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--clocks", default="345,660,990,1320,1650,1980")
    a = ap.parse_args()
    agent = NvmlGpuPower([a.gpu])
    table = agent.supported_clocks_mhz(a.gpu)
    rows = []
    try:
        for kind in ("gemm", "gemv"):
            for want in (int(c) for c in a.clocks.split(",")):
                mhz = min(table, key=lambda c, w=want: abs(c - w))
                agent.lock_clock(a.gpu, mhz)
                row = {"kind": kind, "clock_mhz": mhz, **measure(agent, a.gpu, kind, a.seconds)}
                rows.append(row)
                print(f"{kind} {mhz} MHz: {row['power_w']:.0f} W, seen {row['clock_seen_mhz']:.0f} MHz, "
                      f"{row['ops_per_s']:.1f} ops/s, {row['joules_per_op']:.3f} J/op", flush=True)
    finally:
        agent.restore()
    print(json.dumps({"gpu": agent.name(a.gpu), "cap_w": agent.power_cap_w(a.gpu), "rows": rows}))


if __name__ == "__main__":
    main()
