"""A stand-in for pynvml at the hardware seam, for machines with no NVIDIA GPU.

It behaves like NVML on an H100: limits in milliwatts within nvmlDeviceGetPowerManagementLimitConstraints
(the real library rejects others with NVML_ERROR_INVALID_ARGUMENT), NVML_ERROR_NO_PERMISSION for
non-root callers, power that moves to a new limit only after a settle time, a monotonically
increasing energy counter in millijoules, and clock-event reason bitmasks. Clocks: two memory clocks,
2619 MHz with SM clocks 345-1980 MHz in 15 MHz steps and 1593 MHz with fewer
(nvmlDeviceGetSupportedGraphicsClocks answers NVML_ERROR_INVALID_ARGUMENT for a memory clock the
GPU lacks); a lock outside 345-1980 MHz is
NVML_ERROR_INVALID_ARGUMENT, and a GPU built without lock support answers NVML_ERROR_NOT_SUPPORTED.
Devices have UUIDs (`GPU-...`) and may carry MIG instances (`MIG-...`); a lost GPU answers every
call with NVML_ERROR_GPU_IS_LOST. Error codes are nvml.h's.
"""

from __future__ import annotations

import time

NVML_CLOCK_SM = 1
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_GPU_IS_LOST = 15
MEM_CLOCKS_MHZ = {2619: list(range(345, 1981, 15)), 1593: list(range(345, 1411, 15))}
SM_CLOCKS_MHZ = MEM_CLOCKS_MHZ[2619]


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeMig:
    def __init__(self, uuid: str, parent: FakeDevice) -> None:
        self.uuid = uuid
        self.parent = parent


class FakeDevice:
    def __init__(self, idx: int, clock: callable, migs: int = 0) -> None:  # type: ignore[valid-type]
        self.idx = idx
        self.clock = clock
        self.uuid = f"GPU-{idx:08d}-aaaa-bbbb-cccc-{idx:012d}"
        self.migs = [FakeMig(f"MIG-{idx:08d}-{m:04d}-dddd-eeee-{m:012d}", self) for m in range(migs)]
        self.limit_mw = 700_000
        self.default_mw = 700_000
        self.range_mw = (200_000, 700_000)
        self.demand_w = 650.0
        self.power_w = 650.0
        self.energy_mj = 1_000_000.0
        self.t = clock()
        self.settle_at: float | None = None
        self.locked: tuple[int, int] | None = None
        self.lost = False
        self.lockable = True

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
    NVML_ERROR_UNINITIALIZED = NVML_ERROR_UNINITIALIZED
    NVML_ERROR_INVALID_ARGUMENT = NVML_ERROR_INVALID_ARGUMENT
    NVML_ERROR_NO_PERMISSION = NVML_ERROR_NO_PERMISSION
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_NOT_FOUND = NVML_ERROR_NOT_FOUND
    NVML_ERROR_DRIVER_NOT_LOADED = NVML_ERROR_DRIVER_NOT_LOADED
    NVML_ERROR_GPU_IS_LOST = NVML_ERROR_GPU_IS_LOST

    def __init__(self, count: int = 2, root: bool = True, settle_s: float = 0.2, driver: bool = True,
                 ignore_sets: bool = False, clock: callable = time.monotonic, migs: int = 0) -> None:  # type: ignore[valid-type]
        self.devices = [FakeDevice(i, clock, migs) for i in range(count)]
        self.root = root
        self.settle_s = settle_s
        self.driver = driver
        self.ignore_sets = ignore_sets
        self.calls: list[str] = []
        self.clock = clock
        self.started = False

    def _dev(self, h: FakeDevice) -> FakeDevice:
        if not self.started:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        if not isinstance(h, FakeDevice):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if h.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        h.advance()
        return h

    def _set(self, h: FakeDevice) -> FakeDevice:
        d = self._dev(h)
        if not self.root:
            raise NVMLError(NVML_ERROR_NO_PERMISSION)
        return d

    def nvmlInit(self) -> None:
        if not self.driver:
            raise NVMLError(NVML_ERROR_DRIVER_NOT_LOADED)
        self.started = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeDevice:
        if not 0 <= i < len(self.devices):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return self.devices[i]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeDevice | FakeMig:
        for d in self.devices:
            if d.uuid == uuid:
                return d
            for m in d.migs:
                if m.uuid == uuid:
                    return m
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, m: FakeMig) -> FakeDevice:
        if not isinstance(m, FakeMig):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return m.parent

    def nvmlDeviceGetUUID(self, h: FakeDevice) -> str:
        return h.uuid

    def nvmlDeviceGetName(self, h: FakeDevice) -> str:
        self._dev(h)
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

    def nvmlDeviceGetSupportedMemoryClocks(self, h: FakeDevice) -> list[int]:
        self._dev(h)
        return list(MEM_CLOCKS_MHZ)

    def nvmlDeviceGetSupportedGraphicsClocks(self, h: FakeDevice, mem_mhz: int) -> list[int]:
        self._dev(h)
        if mem_mhz not in MEM_CLOCKS_MHZ:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return sorted(MEM_CLOCKS_MHZ[mem_mhz], reverse=True)

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: FakeDevice) -> int:
        d = self._dev(h)
        return 0x4 if d.demand_w > d.limit_mw / 1000.0 else 0x0

    def nvmlDeviceGetPowerManagementLimitConstraints(self, h: FakeDevice) -> tuple[int, int]:
        return self._dev(h).range_mw

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: FakeDevice) -> int:
        return self._dev(h).default_mw

    def nvmlDeviceGetPowerManagementLimit(self, h: FakeDevice) -> int:
        return self._dev(h).limit_mw

    def nvmlDeviceSetPowerManagementLimit(self, h: FakeDevice, mw: int) -> None:
        self.calls.append(f"set_limit {h.idx} {mw}")
        d = self._set(h)
        if not d.range_mw[0] <= mw <= d.range_mw[1]:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if self.ignore_sets:
            return
        d.limit_mw = mw
        d.settle_at = self.clock() + self.settle_s

    def nvmlDeviceSetGpuLockedClocks(self, h: FakeDevice, lo: int, hi: int) -> None:
        self.calls.append(f"lock {h.idx} {lo} {hi}")
        d = self._set(h)
        if not d.lockable:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        if not SM_CLOCKS_MHZ[0] <= lo <= hi <= SM_CLOCKS_MHZ[-1]:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        d.locked = (lo, hi)

    def nvmlDeviceResetGpuLockedClocks(self, h: FakeDevice) -> None:
        self.calls.append(f"unlock {h.idx}")
        d = self._set(h)
        if not d.lockable:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        d.locked = None
