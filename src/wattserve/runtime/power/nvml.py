"""NVML power agent (nvidia-ml-py, imported as pynvml).

Caps are set with nvmlDeviceSetPowerManagementLimit and read back with
nvmlDeviceGetPowerManagementLimit; the `_v2` setter is avoided because the current wheel never
reports its failures. Values outside nvmlDeviceGetPowerManagementLimitConstraints are refused before
NVML sees them. Defaults are restored on exit and on SIGTERM/SIGINT.

Devices are named by NVML index or by UUID (`GPU-...`, or a MIG instance `MIG-...`, whose power and
clocks are those of its parent GPU: nvmlDeviceGetDeviceHandleFromMigDeviceHandle), so a worker can
open exactly the GPU that CUDA_VISIBLE_DEVICES gave it (see local.py). NVML's return codes become
the typed errors of base.py, as Zeus maps them (zeus.device.exception, zeus.device.gpu.nvidia); the
codes are those of nvml.h's nvmlReturn_t (NVML API Reference, "Error reporting":
https://docs.nvidia.com/deploy/nvml-api/group__nvmlDeviceEnumvs.html).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from wattserve.runtime.power.base import (
    GpuInitError,
    GpuLostError,
    GpuNotFoundError,
    GpuNotSupportedError,
    GpuPermissionError,
    GpuPowerError,
    GpuRangeError,
    check_cap,
)
from wattserve.runtime.power.restore_on_exit import install_restore

THROTTLE_BITS = {
    0x1: "gpu_idle", 0x2: "applications_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake", 0x100: "display_clocks",
}

NVML_CODES: dict[str, tuple[int, type[GpuPowerError], str]] = {
    "NVML_ERROR_UNINITIALIZED": (1, GpuInitError, "NVML is not initialised"),
    "NVML_ERROR_INVALID_ARGUMENT": (2, GpuRangeError, "invalid argument (a value the device does not accept)"),
    "NVML_ERROR_NOT_SUPPORTED": (3, GpuNotSupportedError, "not supported on this GPU"),
    "NVML_ERROR_NO_PERMISSION": (4, GpuPermissionError,
                                 "no permission (power limits and clock locks need root or CAP_SYS_ADMIN)"),
    "NVML_ERROR_NOT_FOUND": (6, GpuNotFoundError, "no such GPU"),
    "NVML_ERROR_DRIVER_NOT_LOADED": (9, GpuInitError, "the NVIDIA driver is not loaded"),
    "NVML_ERROR_LIBRARY_NOT_FOUND": (12, GpuInitError, "libnvidia-ml.so was not found"),
    "NVML_ERROR_GPU_IS_LOST": (15, GpuLostError, "the GPU is lost (fell off the bus)"),
    "NVML_ERROR_RESET_REQUIRED": (16, GpuLostError, "the GPU needs a reset"),
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": (18, GpuInitError, "NVML and the driver versions differ"),
}


def nvml_error(nvml: Any, what: str, e: Exception) -> GpuPowerError:
    """The typed error for an NVMLError (codes looked up on the module, with nvml.h's values as
    fallbacks for wrappers that lack a constant)."""
    code = getattr(e, "value", None)
    for name, (default, cls, text) in NVML_CODES.items():
        if code == getattr(nvml, name, default):
            return cls(f"{what}: {text}")
    return GpuPowerError(f"{what}: {e}")


class NvmlGpuPower:
    modelled = False

    def __init__(self, indices: list[int | str] | None = None, nvml: Any = None, install_handlers: bool = True) -> None:
        if nvml is None:
            try:
                import pynvml as nvml  # type: ignore[import-not-found]
            except ImportError:
                raise GpuInitError("pynvml is not installed (pip install 'wattserve[nvml]')") from None
        self.nvml = nvml
        try:
            nvml.nvmlInit()
            n = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as e:
            raise GpuInitError(f"NVML could not start: {e}") from None
        idx: list[int | str] = list(indices) if indices is not None else list(range(n))
        ints = [i for i in idx if isinstance(i, int)]
        if not idx or (ints and (max(ints) >= n or min(ints) < 0)):
            raise GpuNotFoundError(f"asked for GPU(s) {idx}, NVML sees {n}")
        self.handles = [self._handle(d, n) for d in idx]
        self.defaults = [self._call("default limit", nvml.nvmlDeviceGetPowerManagementDefaultLimit, h)
                         for h in self.handles]
        self.energy0 = [self._energy_mj(h) for h in self.handles]
        self.touched: set[int] = set()
        self.locked: dict[int, int] = {}
        self.clock_tables: dict[int, list[int]] = {}
        if install_handlers:
            install_restore(self.restore)

    def _handle(self, device: int | str, n: int) -> Any:
        """A device handle by index or UUID. A MIG UUID (`MIG-<uuid>`, or CUDA 11's
        `MIG-GPU-<uuid>/<gi>/<ci>`) resolves to its parent GPU: caps and clock locks are per GPU. A
        UUID prefix, which CUDA_VISIBLE_DEVICES accepts, matches the one GPU it starts."""
        nv = self.nvml
        if isinstance(device, int):
            return self._call(f"GPU {device}", nv.nvmlDeviceGetHandleByIndex, device)
        uuid = device.strip()
        if uuid.startswith("MIG-GPU-"):
            uuid = uuid.removeprefix("MIG-").split("/")[0]
        try:
            h = nv.nvmlDeviceGetHandleByUUID(uuid)
        except nv.NVMLError:
            matches = []
            for i in range(n):
                hi = nv.nvmlDeviceGetHandleByIndex(i)
                u = nv.nvmlDeviceGetUUID(hi)
                if (u.decode() if isinstance(u, bytes) else str(u)).startswith(uuid):
                    matches.append(hi)
            if len(matches) != 1:
                raise GpuNotFoundError(f"GPU {device!r}: NVML knows no {'unique ' if matches else ''}GPU with "
                                       "that UUID") from None
            h = matches[0]
        if uuid.startswith("MIG-"):
            h = self._call(f"GPU {device!r}", nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle, h)
        return h

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self.nvml.NVMLError as e:
            raise nvml_error(self.nvml, what, e) from None

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

    def supported_clocks_mhz(self, i: int) -> list[int]:
        """SM clocks the GPU accepts at its highest memory clock (nvmlDeviceGetSupportedMemoryClocks,
        nvmlDeviceGetSupportedGraphicsClocks), ascending: the table a clock policy picks from, as
        Zeus's get_supported_graphics_clocks(max memory clock). Read once: the table is fixed."""
        if i not in self.clock_tables:
            h = self.handles[i]
            mem = max(self._call("memory clocks", self.nvml.nvmlDeviceGetSupportedMemoryClocks, h))
            self.clock_tables[i] = sorted(int(c) for c in self._call(
                "graphics clocks", self.nvml.nvmlDeviceGetSupportedGraphicsClocks, h, mem))
        return list(self.clock_tables[i])

    def locked_clock_mhz(self, i: int) -> int | None:
        return self.locked.get(i)

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
        check_cap(i, watts, *self.cap_range_w(i))
        mw = int(round(watts * 1000))
        self._call(f"set power limit (GPU {i})", self.nvml.nvmlDeviceSetPowerManagementLimit, self.handles[i], mw)
        self.touched.add(i)
        back = self._call("limit", self.nvml.nvmlDeviceGetPowerManagementLimit, self.handles[i])
        if abs(back - mw) > 1000:
            raise GpuPowerError(f"power_cap (GPU {i}): asked {watts:g} W, the device reports {back / 1000:g} W")
        return back / 1000.0

    def lock_clock(self, i: int, mhz: int | None) -> None:
        if mhz is None:
            self._call(f"reset clocks (GPU {i})", self.nvml.nvmlDeviceResetGpuLockedClocks, self.handles[i])
            self.locked.pop(i, None)
            return
        self._call(f"lock clocks (GPU {i})", self.nvml.nvmlDeviceSetGpuLockedClocks, self.handles[i], mhz, mhz)
        self.locked[i] = int(mhz)

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
