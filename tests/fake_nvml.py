"""A stand-in for pynvml at the hardware seam, for machines with no NVIDIA GPU.

It behaves like NVML on an H100: limits in milliwatts within nvmlDeviceGetPowerManagementLimitConstraints
(the real library rejects others with NVML_ERROR_INVALID_ARGUMENT), NVML_ERROR_NO_PERMISSION for
non-root callers, power that moves to a new limit only after a settle time, a monotonically
increasing energy counter in millijoules, and clock-event reason bitmasks.
"""

from __future__ import annotations

import time

NVML_CLOCK_SM = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeDevice:
    def __init__(self, idx: int, clock: callable) -> None:  # type: ignore[valid-type]
        self.idx = idx
        self.clock = clock
        self.limit_mw = 700_000
        self.default_mw = 700_000
        self.range_mw = (200_000, 700_000)
        self.demand_w = 650.0
        self.power_w = 650.0
        self.energy_mj = 1_000_000.0
        self.t = clock()
        self.settle_at: float | None = None
        self.locked: tuple[int, int] | None = None

    def advance(self) -> None:
        now = self.clock()
        self.energy_mj += self.power_w * (now - self.t) * 1000.0
        self.t = now
        if self.settle_at is not None and now >= self.settle_at:
            self.settle_at = None
        if self.settle_at is None:
            self.power_w = min(self.demand_w, self.limit_mw / 1000.0)


class FakeNvml:
    NVMLError = NVMLError
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVML_ERROR_NO_PERMISSION = NVML_ERROR_NO_PERMISSION
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED

    def __init__(self, count: int = 2, root: bool = True, settle_s: float = 0.2, driver: bool = True,
                 ignore_sets: bool = False, clock: callable = time.monotonic) -> None:  # type: ignore[valid-type]
        self.devices = [FakeDevice(i, clock) for i in range(count)]
        self.root = root
        self.settle_s = settle_s
        self.driver = driver
        self.ignore_sets = ignore_sets
        self.calls: list[str] = []
        self.clock = clock

    def _dev(self, h: FakeDevice) -> FakeDevice:
        h.advance()
        return h

    def nvmlInit(self) -> None:
        if not self.driver:
            raise NVMLError(NVML_ERROR_DRIVER_NOT_LOADED)

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeDevice:
        return self.devices[i]

    def nvmlDeviceGetName(self, h: FakeDevice) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetPowerUsage(self, h: FakeDevice) -> int:
        return int(self._dev(h).power_w * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeDevice) -> int:
        return int(self._dev(h).energy_mj)

    def nvmlDeviceGetClockInfo(self, h: FakeDevice, kind: int) -> int:
        d = self._dev(h)
        if d.locked:
            return d.locked[1]
        return 1980 if d.power_w < d.limit_mw / 1000.0 - 1 else 1755

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: FakeDevice) -> int:
        d = self._dev(h)
        return 0x4 if d.demand_w > d.limit_mw / 1000.0 else 0x0

    def nvmlDeviceGetPowerManagementLimitConstraints(self, h: FakeDevice) -> tuple[int, int]:
        return h.range_mw

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: FakeDevice) -> int:
        return h.default_mw

    def nvmlDeviceGetPowerManagementLimit(self, h: FakeDevice) -> int:
        return h.limit_mw

    def nvmlDeviceSetPowerManagementLimit(self, h: FakeDevice, mw: int) -> None:
        self.calls.append(f"set_limit {h.idx} {mw}")
        if not self.root:
            raise NVMLError(NVML_ERROR_NO_PERMISSION)
        if not h.range_mw[0] <= mw <= h.range_mw[1]:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if self.ignore_sets:
            return
        self._dev(h)
        h.limit_mw = mw
        h.settle_at = self.clock() + self.settle_s

    def nvmlDeviceSetGpuLockedClocks(self, h: FakeDevice, lo: int, hi: int) -> None:
        if not self.root:
            raise NVMLError(NVML_ERROR_NO_PERMISSION)
        h.locked = (lo, hi)

    def nvmlDeviceResetGpuLockedClocks(self, h: FakeDevice) -> None:
        if not self.root:
            raise NVMLError(NVML_ERROR_NO_PERMISSION)
        h.locked = None
