"""A stand-in for ROCm's `amdsmi` package at the hardware seam, for machines with no AMD GPU.

It behaves like AMD SMI on an MI300X: power caps in microwatts within the min/max of
amdsmi_get_power_cap_info (amdsmi_set_power_cap with another value fails with AMDSMI_STATUS_INVAL,
as rsmi_dev_power_cap_set's INVALID_ARGS does), AmdSmiLibraryException(AMDSMI_STATUS_NO_PERM) for
non-root setters, socket power in watts that moves to a new cap only after a settle time, an
energy accumulator in units of counter_resolution microjoules, GFX DPM levels in Hz, and
performance-determinism clock limits within the DPM range. Status codes are amdsmi_status_t's.
Python arguments are type-checked as the real wrapper does (AmdSmiParameterException).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

AMDSMI_STATUS_INVAL = 1
AMDSMI_STATUS_NOT_SUPPORTED = 2
AMDSMI_STATUS_NO_PERM = 10
AMDSMI_STATUS_INPUT_OUT_OF_BOUNDS = 17
AMDSMI_STATUS_NOT_FOUND = 31
AMDSMI_STATUS_NOT_INIT = 32
AMDSMI_STATUS_DRIVER_NOT_LOADED = 34
DPM_HZ = [500_000_000, 1_300_000_000, 2_100_000_000]
RESOLUTION_UJ = 15.3


class AmdSmiException(Exception):
    pass


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int) -> None:
        super().__init__(f"Error code:\n\t{err_code} | amdsmi status {err_code}")
        self.err_code = err_code

    def get_error_code(self) -> int:
        return self.err_code


class AmdSmiParameterException(AmdSmiException):
    pass


class AmdSmiClkType:
    SYS = 0
    GFX = 0
    MEM = 3


class AmdSmiDevPerfLevel:
    AUTO = 0
    DETERMINISM = 9


class FakeGpu:
    def __init__(self, idx: int, clock: callable) -> None:  # type: ignore[valid-type]
        self.idx = idx
        self.clock = clock
        self.uuid = f"{idx:02x}ff74a1-0000-1000-80ef-{idx:012x}"
        self.cap_uw = 750_000_000
        self.default_uw = 750_000_000
        self.range_uw = (300_000_000, 750_000_000)
        self.demand_w = 700.0
        self.power_w = 700.0
        self.energy_uj = 5_000_000.0
        self.t = clock()
        self.settle_at: float | None = None
        self.determinism_mhz: int | None = None
        self.perf_level = AmdSmiDevPerfLevel.AUTO

    def advance(self) -> None:
        now = self.clock()
        self.energy_uj += self.power_w * (now - self.t) * 1e6
        self.t = now
        if self.settle_at is not None and now >= self.settle_at:
            self.settle_at = None
        if self.settle_at is None:
            self.power_w = min(self.demand_w, self.cap_uw / 1e6)


class FakeAmdSmi:
    AmdSmiException = AmdSmiException
    AmdSmiLibraryException = AmdSmiLibraryException
    AmdSmiParameterException = AmdSmiParameterException
    AmdSmiClkType = AmdSmiClkType
    AmdSmiDevPerfLevel = AmdSmiDevPerfLevel
    amdsmi_wrapper = SimpleNamespace(
        AMDSMI_STATUS_INVAL=AMDSMI_STATUS_INVAL, AMDSMI_STATUS_NOT_SUPPORTED=AMDSMI_STATUS_NOT_SUPPORTED,
        AMDSMI_STATUS_NO_PERM=AMDSMI_STATUS_NO_PERM, AMDSMI_STATUS_INPUT_OUT_OF_BOUNDS=AMDSMI_STATUS_INPUT_OUT_OF_BOUNDS,
        AMDSMI_STATUS_NOT_FOUND=AMDSMI_STATUS_NOT_FOUND, AMDSMI_STATUS_NOT_INIT=AMDSMI_STATUS_NOT_INIT,
        AMDSMI_STATUS_DRIVER_NOT_LOADED=AMDSMI_STATUS_DRIVER_NOT_LOADED)

    def __init__(self, count: int = 2, root: bool = True, settle_s: float = 0.2, driver: bool = True,
                 clock: callable = time.monotonic, determinism: bool = True,
                 cut_levels: bool = False) -> None:  # type: ignore[valid-type]
        self.gpus = [FakeGpu(i, clock) for i in range(count)]
        self.root = root
        self.settle_s = settle_s
        self.driver = driver
        self.clock = clock
        self.determinism = determinism
        self.cut_levels = cut_levels
        """Return the DPM levels as some py-interface releases do: cut at num_supported - 1."""
        self.started = False
        self.calls: list[str] = []

    def _gpu(self, h: FakeGpu) -> FakeGpu:
        if not self.started:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_INIT)
        if not isinstance(h, FakeGpu):
            raise AmdSmiParameterException(f"{h!r} is not a processor handle")
        h.advance()
        return h

    def _set(self, h: FakeGpu) -> FakeGpu:
        g = self._gpu(h)
        if not self.root:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NO_PERM)
        return g

    def amdsmi_init(self, flags: int = 0) -> None:
        if not self.driver:
            raise AmdSmiLibraryException(AMDSMI_STATUS_DRIVER_NOT_LOADED)
        self.started = True

    def amdsmi_shut_down(self) -> None:
        self.started = False

    def amdsmi_get_processor_handles(self) -> list[FakeGpu]:
        if not self.started:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_INIT)
        return list(self.gpus)

    def amdsmi_get_gpu_device_uuid(self, h: FakeGpu) -> str:
        return self._gpu(h).uuid

    def amdsmi_get_gpu_asic_info(self, h: FakeGpu) -> dict:
        self._gpu(h)
        return {"market_name": "AMD Instinct MI300X", "vendor_id": 0x1002, "device_id": 0x74A1}

    def amdsmi_get_power_info(self, h: FakeGpu) -> dict:
        g = self._gpu(h)
        return {"current_socket_power": int(g.power_w), "average_socket_power": "N/A", "gfx_voltage": "N/A",
                "soc_voltage": "N/A", "mem_voltage": "N/A", "power_limit": g.cap_uw // 1_000_000}

    def amdsmi_get_energy_count(self, h: FakeGpu) -> dict:
        g = self._gpu(h)
        return {"energy_accumulator": int(g.energy_uj / RESOLUTION_UJ), "counter_resolution": RESOLUTION_UJ,
                "timestamp": int(self.clock() * 1e9)}

    def amdsmi_get_power_cap_info(self, h: FakeGpu) -> dict:
        g = self._gpu(h)
        return {"power_cap": g.cap_uw, "default_power_cap": g.default_uw, "dpm_cap": 0,
                "min_power_cap": g.range_uw[0], "max_power_cap": g.range_uw[1]}

    def amdsmi_set_power_cap(self, h: FakeGpu, sensor_ind: int, cap: int) -> None:
        self.calls.append(f"set_cap {h.idx} {cap}")
        if not isinstance(sensor_ind, int) or not isinstance(cap, int):
            raise AmdSmiParameterException("sensor_ind and cap must be int")
        g = self._set(h)
        if sensor_ind != 0 or not g.range_uw[0] <= cap <= g.range_uw[1]:
            raise AmdSmiLibraryException(AMDSMI_STATUS_INVAL)
        g.cap_uw = cap
        g.settle_at = self.clock() + self.settle_s

    def amdsmi_get_clock_info(self, h: FakeGpu, clk_type: int) -> dict:
        g = self._gpu(h)
        top = DPM_HZ[-1] // 1_000_000
        if g.determinism_mhz is not None:
            clk = g.determinism_mhz
        else:
            clk = top if g.power_w < g.cap_uw / 1e6 - 1 else top - 300
        return {"clk": clk, "min_clk": DPM_HZ[0] // 1_000_000, "max_clk": top, "clk_locked": False,
                "clk_deep_sleep": "N/A"}

    def amdsmi_get_clk_freq(self, h: FakeGpu, clk_type: int) -> dict:
        self._gpu(h)
        levels = DPM_HZ[: len(DPM_HZ) - 1] if self.cut_levels else list(DPM_HZ)
        return {"num_supported": len(DPM_HZ), "current": 2, "frequency": levels}

    def amdsmi_set_gpu_perf_determinism_mode(self, h: FakeGpu, clkvalue: int) -> None:
        self.calls.append(f"determinism {h.idx} {clkvalue}")
        if not isinstance(clkvalue, int):
            raise AmdSmiParameterException("clkvalue must be int")
        g = self._set(h)
        if not self.determinism:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        if not DPM_HZ[0] // 1_000_000 <= clkvalue <= DPM_HZ[-1] // 1_000_000:
            raise AmdSmiLibraryException(AMDSMI_STATUS_INVAL)
        g.determinism_mhz = clkvalue
        g.perf_level = AmdSmiDevPerfLevel.DETERMINISM

    def amdsmi_set_gpu_perf_level(self, h: FakeGpu, level: int) -> None:
        self.calls.append(f"perf_level {h.idx} {level}")
        g = self._set(h)
        g.perf_level = level
        if level == AmdSmiDevPerfLevel.AUTO:
            g.determinism_mhz = None
