"""What a clock change costs, and what the step loop pays for asking for one.

Three figures, each the median and 99th percentile over `--calls` calls:
- `lock_clock_s`: one NvmlGpuPower.lock_clock call (nvmlDeviceSetGpuLockedClocks), alternating
  between two clocks so that no call is a no-op;
- `request_s`: one ClockActuator.request from the caller's thread (what a per-iteration governor
  adds to a step; the device call runs on the actuator's thread);
- `power_stats_s`: one ops.power_stats read (what a worker adds to each 250 ms stats frame).

`--backend fake` (the default) runs against tests/fake_nvml.py, so it measures wattserve's own
overhead only; `--backend nvml` runs against the real NVML on GPU `--gpu` (needs root, or
CAP_SYS_ADMIN, to lock clocks; restores the clocks after) and gives the driver's real latency.

Usage: python bench/clock_latency.py [--backend fake|nvml] [--gpu 0] [--calls 2000]
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from wattserve.runtime.power.clock_actuator import ClockActuator
from wattserve.runtime.power.nvml import NvmlGpuPower
from wattserve.runtime.power.ops import power_stats


def _summary(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"p50": statistics.median(xs), "p99": xs[min(len(xs) - 1, int(0.99 * len(xs)))], "max": xs[-1]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=("fake", "nvml"), default="fake")
    p.add_argument("--gpu", type=int, default=0)
    p.add_argument("--calls", type=int, default=2000)
    a = p.parse_args(argv)
    nvml: Any = None
    if a.backend == "fake":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from fake_nvml import FakeNvml

        nvml = FakeNvml(count=a.gpu + 1)
    agent = NvmlGpuPower(indices=[a.gpu], nvml=nvml, install_handlers=a.backend == "nvml")
    clocks = agent.supported_clocks_mhz(0)
    pair = (clocks[len(clocks) // 2], clocks[-1])
    lock: list[float] = []
    try:
        for k in range(a.calls):
            t0 = time.perf_counter()
            agent.lock_clock(0, pair[k % 2])
            lock.append(time.perf_counter() - t0)
        act = ClockActuator(agent)
        req: list[float] = []
        for k in range(a.calls):
            t0 = time.perf_counter()
            act.request(pair[k % 2])
            req.append(time.perf_counter() - t0)
        act.idle(60)
        act.close()
        stats: list[float] = []
        for _ in range(a.calls):
            t0 = time.perf_counter()
            power_stats(agent)
            stats.append(time.perf_counter() - t0)
    finally:
        agent.restore()
    out = {"backend": a.backend, "gpu": agent.name(0), "calls": a.calls, "clocks_mhz": list(pair),
           "lock_clock_s": _summary(lock), "request_s": _summary(req), "power_stats_s": _summary(stats),
           "actuator": {"device_calls": act.calls, "coalesced": act.coalesced, "skipped": act.skipped}}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
