"""Modelled power for machines with no GPU: the simulator's power model applied to each worker's
measured activity. Every figure it produces is labelled modelled.

For each worker ("GPU" i) the agent reads the engine's counters between samples: the fraction of
wall time it spent in steps, and the tokens per step. It maps a step to the catalog GPU running the
catalog model (`as_model`, since a test model has no GPU profile) with a batch of that many tokens
(prefill) or sequences (decode), finds the operating point under the cap in force, and draws
idle + busy fraction * (busy power - idle). A new cap is in force after `settle_s`, like a real
power limiter; out-of-range caps are refused.

A worker's step governor (issue 7) asks for an SM clock per iteration. Either the worker reports
the governor's latest request in its stats (`governor_clock_mhz`) and this agent applies it on top
of any lock set through the control plane, or a ClockActuator (clock_actuator.py) sets the lower of
the two as this agent's lock; both give the lower of the two, as `nvidia-smi -lgc` under a governor
would behave. In a worker (local.py) the agent models that worker's device alone (count 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from wattserve.catalog.gpus import get_gpu
from wattserve.catalog.models import BatchShape, get_model
from wattserve.perf.latency import RooflineLatencyModel
from wattserve.perf.operating_point import operating_point
from wattserve.perf.power import UtilizationPowerModel
from wattserve.runtime.power.base import GpuRangeError, check_cap, effective_lock

CAP_SETTLE_S = 0.3
SAMPLE_S = 0.02
"""A reading within 20 ms of the last one returns the last estimate, as NVML's power counter, which
updates on its own period, does: re-estimating over microseconds would see no busy time and report
idle for a busy GPU."""


class ModelledGpuPower:
    modelled = True

    def __init__(self, count: int, gpu: str, as_model: str, stats: Callable[[int], dict[str, Any]],
                 settle_s: float = CAP_SETTLE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = get_gpu(gpu)
        self.latency = RooflineLatencyModel(self.spec, get_model(as_model), 1)
        self.power = UtilizationPowerModel.for_gpu(self.spec)
        self.stats = stats
        self.settle_s = settle_s
        self.clock = clock
        self.n = count
        self.cap = [self.spec.tdp_w] * count
        self.pending: list[tuple[float, float] | None] = [None] * count
        self.locked: list[int | None] = [None] * count
        self.energy = [0.0] * count
        self.last_w = [self.spec.idle_w] * count
        self.last_clock = [self.spec.clock_max_mhz] * count
        self.last_lock: list[int | None] = [None] * count
        self.prev: list[tuple[float, float, float, float]] = [(self.clock(), 0.0, 0.0, 0.0)] * count

    def count(self) -> int:
        return self.n

    def name(self, i: int) -> str:
        return f"{self.spec.name} (modelled)"

    def _settle(self, i: int, now: float) -> None:
        p = self.pending[i]
        if p is not None and now >= p[0]:
            self.cap[i] = p[1]
            self.pending[i] = None

    def sample(self, i: int) -> float:
        """Advance GPU i's model to now: integrate energy, return the current power."""
        now = self.clock()
        self._settle(i, now)
        st = self.stats(i)
        t0, busy0, steps0, tok0 = self.prev[i]
        dt = now - t0
        if dt < SAMPLE_S:
            return self.last_w[i]
        busy, steps, tokens = float(st.get("busy_s", 0.0)), float(st.get("steps", 0)), float(st.get("tokens", 0))
        lock = effective_lock(self.locked[i], st.get("governor_clock_mhz"))
        self.last_lock[i] = lock
        frac = min(1.0, max(0.0, (busy - busy0) / dt))
        per_step = (tokens - tok0) / (steps - steps0) if steps > steps0 else 0.0
        watts = self.spec.idle_w
        if frac > 0 and per_step > 0:
            n = max(1, int(round(per_step)))
            shape = BatchShape.prefill(n) if st.get("role") == "prefill" else BatchShape.decode(n, 1024)
            op = operating_point(self.spec, self.latency, self.power, shape, self.cap[i], lock)
            watts = self.spec.idle_w + frac * (op.power_w - self.spec.idle_w)
            self.last_clock[i] = op.clock_mhz
        self.energy[i] += 0.5 * (watts + self.last_w[i]) * dt
        self.last_w[i] = watts
        self.prev[i] = (now, busy, steps, tokens)
        return watts

    def power_w(self, i: int) -> float:
        return self.sample(i)

    def energy_j(self, i: int) -> float:
        self.sample(i)
        return self.energy[i]

    def clock_mhz(self, i: int) -> int:
        return int(self.last_clock[i])

    def supported_clocks_mhz(self, i: int) -> list[int]:
        """The catalog GPU's SM clock table (what NVML's supported graphics clocks would list)."""
        return list(self.spec.clocks)

    def locked_clock_mhz(self, i: int) -> int | None:
        return self.locked[i]

    def throttle_reasons(self, i: int) -> list[str]:
        lock = self.last_lock[i] if self.last_lock[i] is not None else self.locked[i]
        return ["sw_power_cap"] if self.last_clock[i] < (lock or self.spec.clock_max_mhz) else []

    def cap_range_w(self, i: int) -> tuple[float, float]:
        return self.spec.cap_min_w, self.spec.cap_max_w

    def power_cap_w(self, i: int) -> float:
        self._settle(i, self.clock())
        p = self.pending[i]
        return p[1] if p is not None else self.cap[i]

    def cap_in_force_w(self, i: int) -> float:
        self._settle(i, self.clock())
        return self.cap[i]

    def set_power_cap(self, i: int, watts: float) -> float:
        check_cap(i, watts, *self.cap_range_w(i))
        self.sample(i)
        self.pending[i] = (self.clock() + self.settle_s, float(watts))
        return float(watts)

    def lock_clock(self, i: int, mhz: int | None) -> None:
        if mhz is not None and not self.spec.clock_min_mhz <= mhz <= self.spec.clock_max_mhz:
            raise GpuRangeError(f"clock (GPU {i}): {mhz} MHz is outside [{self.spec.clock_min_mhz}, "
                                f"{self.spec.clock_max_mhz}] MHz")
        self.locked[i] = mhz

    def restore(self) -> None:
        self.cap = [self.spec.tdp_w] * self.n
        self.pending = [None] * self.n
        self.locked = [None] * self.n
