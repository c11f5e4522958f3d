"""A simulated GPU: its power draw over time, its power cap and its locked clock."""

from __future__ import annotations

from array import array

from wattserve.catalog.gpus import GpuSpec
from wattserve.errors import out_of_range


class SimGpu:
    """Power is piecewise constant; every change is recorded, so energy is exactly the integral of
    the recorded series. `cap_w` is the cap in force (settled); `cap_target_w` the one last asked."""

    __slots__ = ("index", "spec", "node", "cap_w", "cap_target_w", "locked_clock_mhz", "power_w", "energy_j",
                 "_t", "times", "watts", "cap_times", "cap_values", "clock_mhz")

    def __init__(self, index: int, spec: GpuSpec, node: int, cap_w: float | None = None,
                 locked_clock_mhz: int | None = None) -> None:
        self.index = index
        self.spec = spec
        self.node = node
        cap = spec.cap_max_w if cap_w is None else cap_w
        check_cap(spec, cap)
        if locked_clock_mhz is not None:
            check_clock(spec, locked_clock_mhz)
        self.cap_w = cap
        self.cap_target_w = cap
        self.locked_clock_mhz = locked_clock_mhz
        self.power_w = spec.idle_w
        self.clock_mhz = spec.clock_max_mhz
        self.energy_j = 0.0
        self._t = 0.0
        self.times = array("d", [0.0])
        self.watts = array("d", [spec.idle_w])
        self.cap_times = array("d", [0.0])
        self.cap_values = array("d", [cap])

    def set_power(self, now: float, watts: float) -> None:
        if watts == self.power_w:
            return
        self.energy_j += self.power_w * (now - self._t)
        self._t = now
        self.power_w = watts
        self.times.append(now)
        self.watts.append(watts)

    def settle_cap(self, now: float, watts: float) -> None:
        self.cap_w = watts
        self.cap_times.append(now)
        self.cap_values.append(watts)

    def close(self, now: float) -> None:
        self.energy_j += self.power_w * (now - self._t)
        self._t = now


def check_cap(spec: GpuSpec, watts: float) -> None:
    if not spec.cap_min_w <= watts <= spec.cap_max_w:
        raise out_of_range(f"power_cap ({spec.name})", watts, spec.cap_min_w, spec.cap_max_w, " W")


def check_clock(spec: GpuSpec, mhz: int) -> None:
    if not spec.clock_min_mhz <= mhz <= spec.clock_max_mhz:
        raise out_of_range(f"clock ({spec.name})", mhz, spec.clock_min_mhz, spec.clock_max_mhz, " MHz")
