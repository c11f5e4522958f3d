"""NVML power agent (nvidia-ml-py, imported as pynvml).

Caps are set with nvmlDeviceSetPowerManagementLimit and read back with
nvmlDeviceGetPowerManagementLimit; the `_v2` setter is avoided because the current wheel never
reports its failures. Values outside nvmlDeviceGetPowerManagementLimitConstraints are refused before
NVML sees them. Defaults are restored on exit and on SIGTERM/SIGINT.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import time
from typing import Any

from wattserve.runtime.power.base import GpuPowerError

THROTTLE_BITS = {
    0x1: "gpu_idle", 0x2: "applications_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake", 0x100: "display_clocks",
}


class NvmlGpuPower:
    modelled = False

    def __init__(self, indices: list[int] | None = None, nvml: Any = None, install_handlers: bool = True) -> None:
        if nvml is None:
            try:
                import pynvml as nvml  # type: ignore[import-not-found]
            except ImportError:
                raise GpuPowerError("pynvml is not installed (pip install 'wattserve[nvml]')") from None
        self.nvml = nvml
        try:
            nvml.nvmlInit()
            n = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as e:
            raise GpuPowerError(f"NVML could not start: {e}") from None
        idx = indices if indices is not None else list(range(n))
        if not idx or max(idx) >= n:
            raise GpuPowerError(f"asked for GPU(s) {idx}, NVML sees {n}")
        self.handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in idx]
        self.defaults = [nvml.nvmlDeviceGetPowerManagementDefaultLimit(h) for h in self.handles]
        self.energy0 = [self._energy_mj(h) for h in self.handles]
        self.touched: set[int] = set()
        self.locked: set[int] = set()
        if install_handlers:
            atexit.register(self.restore)
            for sig in (signal.SIGTERM, signal.SIGINT):
                prev = signal.getsignal(sig)

                def handler(signum: int, frame: Any, prev: Any = prev) -> None:
                    self.restore()
                    if callable(prev):
                        prev(signum, frame)
                    else:
                        raise SystemExit(128 + signum)

                signal.signal(sig, handler)

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self.nvml.NVMLError as e:
            code = getattr(e, "value", None)
            if code == getattr(self.nvml, "NVML_ERROR_NO_PERMISSION", -1):
                raise GpuPowerError(f"{what}: no permission (power limits and clock locks need root or "
                                    "CAP_SYS_ADMIN)") from None
            if code == getattr(self.nvml, "NVML_ERROR_NOT_SUPPORTED", -2):
                raise GpuPowerError(f"{what}: not supported on this GPU") from None
            raise GpuPowerError(f"{what}: {e}") from None

    def _energy_mj(self, h: Any) -> float:
        return float(self._call("energy", self.nvml.nvmlDeviceGetTotalEnergyConsumption, h))

    def count(self) -> int:
        return len(self.handles)

    def name(self, i: int) -> str:
        n = self._call("name", self.nvml.nvmlDeviceGetName, self.handles[i])
        return n.decode() if isinstance(n, bytes) else str(n)

    def power_w(self, i: int) -> float:
        return self._call("power", self.nvml.nvmlDeviceGetPowerUsage, self.handles[i]) / 1000.0

    def energy_j(self, i: int) -> float:
        return (self._energy_mj(self.handles[i]) - self.energy0[i]) / 1000.0

    def clock_mhz(self, i: int) -> int:
        return int(self._call("clock", self.nvml.nvmlDeviceGetClockInfo, self.handles[i], self.nvml.NVML_CLOCK_SM))

    def throttle_reasons(self, i: int) -> list[str]:
        fn = getattr(self.nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            self.nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        bits = int(self._call("throttle reasons", fn, self.handles[i]))
        return [name for bit, name in THROTTLE_BITS.items() if bits & bit]

    def cap_range_w(self, i: int) -> tuple[float, float]:
        lo, hi = self._call("limit range", self.nvml.nvmlDeviceGetPowerManagementLimitConstraints, self.handles[i])
        return lo / 1000.0, hi / 1000.0

    def power_cap_w(self, i: int) -> float:
        return self._call("limit", self.nvml.nvmlDeviceGetPowerManagementLimit, self.handles[i]) / 1000.0

    def set_power_cap(self, i: int, watts: float) -> float:
        lo, hi = self.cap_range_w(i)
        if not lo <= watts <= hi:
            raise GpuPowerError(f"power_cap (GPU {i}): {watts:g} W is outside the allowed range [{lo:g}, {hi:g}] W")
        mw = int(round(watts * 1000))
        self._call("set power limit", self.nvml.nvmlDeviceSetPowerManagementLimit, self.handles[i], mw)
        self.touched.add(i)
        back = self._call("limit", self.nvml.nvmlDeviceGetPowerManagementLimit, self.handles[i])
        if abs(back - mw) > 1000:
            raise GpuPowerError(f"power_cap (GPU {i}): asked {watts:g} W, the device reports {back / 1000:g} W")
        return back / 1000.0

    def lock_clock(self, i: int, mhz: int | None) -> None:
        if mhz is None:
            self._call("reset clocks", self.nvml.nvmlDeviceResetGpuLockedClocks, self.handles[i])
            self.locked.discard(i)
            return
        self._call("lock clocks", self.nvml.nvmlDeviceSetGpuLockedClocks, self.handles[i], mhz, mhz)
        self.locked.add(i)

    def restore(self) -> None:
        for i in sorted(self.touched):
            with contextlib.suppress(self.nvml.NVMLError):
                self.nvml.nvmlDeviceSetPowerManagementLimit(self.handles[i], self.defaults[i])
        for i in sorted(self.locked):
            with contextlib.suppress(self.nvml.NVMLError):
                self.nvml.nvmlDeviceResetGpuLockedClocks(self.handles[i])
        self.touched.clear()
        self.locked.clear()


def wait_for_power(agent: NvmlGpuPower, i: int, below_w: float, timeout_s: float) -> bool:
    """Poll until GPU i draws at most below_w (a cap has settled) or the timeout passes."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if agent.power_w(i) <= below_w:
            return True
        time.sleep(0.05)
    return False
