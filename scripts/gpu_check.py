"""Check wattserve's NVML power agent, clock actuator and a BiScale-governed CUDA worker on a real GPU.

Everything the CPU test suite checks against `tests/fake_nvml.py`, here against the driver: the cap
range and clock table NVML reports; setting a power cap and reading it back; how long a lowered cap
takes to bring a loaded GPU's draw under it; locking the SM clock (what BiScale's governors ask for
every iteration, `nvmlDeviceSetGpuLockedClocks`) and what it does to a bf16 matmul's speed and power;
the asynchronous `ClockActuator` the workers use; and a CUDA engine worker running `--governor biscale`
(arXiv 2602.18755) whose clock requests reach the device. Every setting is restored in a `finally`
(the agent's `restore()`: default cap, clocks unlocked), and read back.

Usage: python scripts/gpu_check.py [--gpu 0] [--load-s 4]
Needs a CUDA GPU, torch and nvidia-ml-py. Last line printed: one JSON object with every figure.
NVML errors (permissions, unsupported calls) are reported verbatim in the JSON's `errors`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from typing import Any

import torch

from wattserve.runtime.power.clock_actuator import ClockActuator
from wattserve.runtime.power.nvml import NvmlGpuPower


def matmul_load(seconds: float, n: int = 8192) -> float:
    """bf16 n x n x n matmuls for `seconds`; returns TFLOP/s."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    k = 0
    while time.perf_counter() - t0 < seconds:
        for _ in range(8):
            a @ b
        k += 8
        torch.cuda.synchronize()
    return 2 * n**3 * k / (time.perf_counter() - t0) / 1e12


def sampled(agent: NvmlGpuPower, i: int, seconds: float, every_s: float = 0.1) -> tuple[float, list[tuple]]:
    """Run the load while sampling (t, power W, SM clock MHz) in a thread."""
    out: list[tuple] = []
    done = threading.Event()

    def sample() -> None:
        t0 = time.perf_counter()
        while not done.is_set():
            out.append((time.perf_counter() - t0, agent.power_w(i), agent.clock_mhz(i)))
            time.sleep(every_s)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        tflops = matmul_load(seconds)
    finally:
        done.set()
        th.join()
    return tflops, out


def summary(samples: list[tuple], skip_s: float = 0.5) -> dict[str, float]:
    s = [x for x in samples if x[0] >= skip_s] or samples
    return {"power_mean_w": statistics.fmean(x[1] for x in s), "power_max_w": max(x[1] for x in s),
            "clock_mean_mhz": statistics.fmean(x[2] for x in s), "clock_max_mhz": max(x[2] for x in s)}


def timed(fn: Any, *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--load-s", type=float, default=4.0)
    a = ap.parse_args()
    i = a.gpu
    res: dict[str, Any] = {"errors": []}
    agent = NvmlGpuPower([i])
    try:
        clocks = agent.supported_clocks_mhz(i)
        lo, hi = agent.cap_range_w(i)
        res |= {"name": agent.name(i), "cap_range_w": [lo, hi], "cap_default_w": agent.power_cap_w(i),
                "clocks_count": len(clocks), "clock_min_mhz": clocks[0], "clock_max_mhz": clocks[-1],
                "idle_power_w": agent.power_w(i), "idle_clock_mhz": agent.clock_mhz(i)}
        tf, s = sampled(agent, i, a.load_s)
        res["uncapped"] = {"tflops": tf, **summary(s)}

        cap = max(lo, min(hi, 400.0))
        res["set_cap_ms"] = timed(agent.set_power_cap, i, cap)
        res["cap_read_back_w"] = agent.power_cap_w(i)
        tf, s = sampled(agent, i, a.load_s)
        res["capped"] = {"cap_w": cap, "tflops": tf, **summary(s),
                         "share_of_samples_over_cap_5pct": sum(x[1] > cap * 1.05 for x in s) / max(1, len(s))}

        agent.set_power_cap(i, hi)
        low = max(lo, 300.0)
        t_set: list[float] = []

        def lower_later() -> None:
            time.sleep(1.5)
            t_set.append(time.perf_counter())
            agent.set_power_cap(i, low)

        th = threading.Thread(target=lower_later)
        t_load = time.perf_counter()
        th.start()
        tf, s = sampled(agent, i, a.load_s + 1.5)
        th.join()
        t_cut = t_set[0] - t_load
        after = [x for x in s if x[0] >= t_cut]
        settle = next((x[0] - t_cut for k, x in enumerate(after)
                       if all(y[1] <= low * 1.05 for y in after[k:k + 3])), None)
        res["cap_settle"] = {"from_w": hi, "to_w": low, "settle_s": settle, "sample_every_s": 0.1}
        agent.set_power_cap(i, hi)

        target = min(clocks, key=lambda c: abs(c - 1200))
        res["lock_clock_ms"] = timed(agent.lock_clock, i, target)
        tf, s = sampled(agent, i, a.load_s)
        res["locked"] = {"lock_mhz": target, "tflops": tf, **summary(s)}
        res["unlock_ms"] = timed(agent.lock_clock, i, None)

        act = ClockActuator(agent, i, on_error=lambda e: res["errors"].append(f"actuator: {e}"))
        want = min(clocks, key=lambda c: abs(c - 990))
        act.request(want)
        time.sleep(0.3)
        tf, s = sampled(agent, i, a.load_s)
        res["actuator"] = {"requested_mhz": want, "agent_lock_mhz": agent.locked_clock_mhz(i), "tflops": tf,
                           **summary(s), "call_ms": [x * 1e3 for x in act.latencies_s]}
        act.request(None)
        time.sleep(0.3)
        act.close()
        res["worker"] = governed_worker(i)
    except Exception as e:  # noqa: BLE001 - report whatever the driver says, then restore
        res["errors"].append(f"{type(e).__name__}: {e}")
    finally:
        agent.restore()
        res["restored"] = {"cap_w": agent.power_cap_w(i), "cap_default_w": agent.defaults[0] / 1000.0,
                           "agent_lock_mhz": agent.locked_clock_mhz(i), "idle_clock_mhz": agent.clock_mhz(i)}
    print(json.dumps(res, default=float))


def governed_worker(i: int) -> dict[str, Any]:
    """A CUDA engine worker with `--governor biscale` and the NVML agent, stepped as its run loop
    does: each step's clock request goes to the device through the worker's clock actuator."""
    from wattserve.runtime.engine.engine import EngineArgs
    from wattserve.runtime.engine.sequence import SamplingParams
    from wattserve.runtime.worker import Worker, WorkerSpec

    w = Worker(WorkerSpec(0, "colocated", EngineArgs(model="small", device=f"cuda:{i}", seed=1), governor="biscale",
                          slo_ttft_s=1.0, slo_tpot_s=0.05, power_backend="nvml"))
    greedy = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)
    for k in range(16):
        w.engine.add(f"r{k}", list(range(1, 200)), greedy)
    asked: list[int | None] = []
    device: list[int | None] = []
    t0 = time.perf_counter()
    steps = 0
    while w.engine.has_work():
        w.engine.step()
        w.power.request_clock(w.engine.governor_clock_mhz)
        asked.append(w.engine.governor_clock_mhz)
        steps += 1
        if steps % 8 == 0:
            time.sleep(0.02)
            device.append(w.power.stats().get("clock_mhz"))
    wall = time.perf_counter() - t0
    stats = w.power.stats()
    w.power.close()
    return {"steps": steps, "wall_s": wall, "requested_mhz": sorted({c for c in asked if c is not None}),
            "requests_none": sum(c is None for c in asked), "device_clock_samples": device[-8:],
            "power": {k: v for k, v in stats.items() if k != "supported_clocks_mhz"}}


if __name__ == "__main__":
    main()
