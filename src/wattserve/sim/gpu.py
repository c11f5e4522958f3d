"""A simulated GPU: its power draw, SM clock and power cap over time, and its energy by phase."""

from __future__ import annotations

from array import array

from wattserve.catalog.gpus import GpuSpec
from wattserve.errors import UsageError

IDLE = -1.0
"""`prefill_share` of a GPU with nothing to run."""


class SimGpu:
    """Power is piecewise constant; every change is recorded, so energy is exactly the integral of
    the recorded series. `cap_w` is the cap in force (settled); `cap_target_w` the one last asked.
    Energy is split by phase as it accrues: while a step runs, its `prefill_share` of the power goes
    to prefill and the rest to decode; with nothing to run, all of it is idle energy."""

    __slots__ = ("index", "spec", "node", "cap_w", "cap_target_w", "locked_clock_mhz", "power_w",
                 "_t", "times", "watts", "cap_times", "cap_values", "clock_mhz", "clock_times", "clock_values",
                 "share", "prefill_energy_j", "decode_energy_j", "idle_energy_j")

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
        self.prefill_energy_j = 0.0
        self.decode_energy_j = 0.0
        self.idle_energy_j = 0.0
        self.share = IDLE
        self._t = 0.0
        self.times = array("d", [0.0])
        self.watts = array("d", [spec.idle_w])
        self.cap_times = array("d", [0.0])
        self.cap_values = array("d", [cap])
        self.clock_times = array("d", [0.0])
        self.clock_values = array("d", [spec.clock_max_mhz])

    def _accrue(self, now: float) -> None:
        e = self.power_w * (now - self._t)
        share = self.share
        if share == IDLE:
            self.idle_energy_j += e
        elif share == 0.0:
            self.decode_energy_j += e
        elif share == 1.0:
            self.prefill_energy_j += e
        else:
            self.prefill_energy_j += e * share
            self.decode_energy_j += e * (1.0 - share)
        self._t = now

    def set_power(self, now: float, watts: float, prefill_share: float = IDLE) -> None:
        if watts == self.power_w and prefill_share == self.share:
            return
        self._accrue(now)
        self.share = prefill_share
        if watts != self.power_w:
            self.power_w = watts
            self.times.append(now)
            self.watts.append(watts)

    def decode_steps(self, starts: list[float], watts: list[float], clocks: list[int]) -> None:
        """Decode iterations that each start at starts[i] (ascending, not before the last change)
        at their own power and clock: `set_power` and `set_clock` for each, in one call."""
        self._accrue(starts[0])
        self.share = 0.0
        times, ws = self.times, self.watts
        t_prev, w_prev = starts[0], self.power_w
        e = 0.0
        for t, w in zip(starts, watts):
            e += w_prev * (t - t_prev)
            t_prev = t
            if w != w_prev:
                times.append(t)
                ws.append(w)
                w_prev = w
        self.decode_energy_j += e
        self.power_w = w_prev
        self._t = t_prev
        c_prev = self.clock_mhz
        ct, cv = self.clock_times, self.clock_values
        for t, c in zip(starts, clocks):
            if c != c_prev:
                ct.append(t)
                cv.append(c)
                c_prev = c
        self.clock_mhz = c_prev

    def set_clock(self, now: float, mhz: int) -> None:
        if mhz != self.clock_mhz:
            self.clock_mhz = mhz
            self.clock_times.append(now)
            self.clock_values.append(mhz)

    def settle_cap(self, now: float, watts: float) -> None:
        self.cap_w = watts
        self.cap_times.append(now)
        self.cap_values.append(watts)

    @property
    def energy_j(self) -> float:
        """Energy in joules up to the last change: the phases' sum, so the split always adds up."""
        return self.prefill_energy_j + self.decode_energy_j + self.idle_energy_j

    def energy_at(self, now: float) -> float:
        """Energy in joules from the start to `now` (a monotonic counter)."""
        return self.energy_j + self.power_w * (now - self._t)

    def close(self, now: float) -> None:
        self._accrue(now)


def check_cap(spec: GpuSpec, watts: float, field: str = "power_cap_w") -> None:
    """Refuse a cap outside the GPU's range (NaN included: no comparison holds for it)."""
    if not spec.cap_min_w <= watts <= spec.cap_max_w:
        raise UsageError(f"{watts:g} W is outside {spec.name}'s range [{spec.cap_min_w:g}, {spec.cap_max_w:g}] W",
                         field)


def check_clock(spec: GpuSpec, mhz: float, field: str = "clock_mhz") -> None:
    if not spec.clock_min_mhz <= mhz <= spec.clock_max_mhz:
        raise UsageError(f"{mhz:g} MHz is outside {spec.name}'s range [{spec.clock_min_mhz:g}, "
                         f"{spec.clock_max_mhz:g}] MHz", field)
