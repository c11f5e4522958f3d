"""AMD power agent through ROCm's `amdsmi` Python package (AMD SMI, the successor of rocm_smi).

The calls, from the AMD SMI Python API (ROCm/amdsmi py-interface, and the C reference it wraps:
https://rocm.docs.amd.com/projects/amdsmi/en/latest/ , "Power Control" and "Clock, Power and
Performance Control"):
- amdsmi_init / amdsmi_get_processor_handles: the GPUs, in HIP order;
- amdsmi_get_power_cap_info(h): power_cap, default_power_cap, min_power_cap, max_power_cap, in
  microwatts; amdsmi_set_power_cap(h, sensor_ind=0, cap) takes microwatts too ("cap must be between
  the minimum and maximum power cap values");
- amdsmi_get_power_info(h): socket power in watts (`socket_power` from ROCm 7, else
  `current_socket_power`, else `average_socket_power`; a field a part lacks reads "N/A");
- amdsmi_get_energy_count(h): an accumulator (`energy_accumulator`, `power` in older releases) in
  units of `counter_resolution` microjoules;
- amdsmi_get_clock_info(h, GFX)["clk"] in MHz; amdsmi_get_clk_freq(h, SYS)["frequency"], the DPM
  levels in Hz (few on Instinct parts: the table a policy picks from is that coarse);
- clock lock: amdsmi_set_gpu_perf_determinism_mode(h, mhz), a soft maximum on GFXCLK (an upper
  bound, which is what a wattserve clock lock means), undone by amdsmi_set_gpu_perf_level(h, AUTO);
- errors: AmdSmiLibraryException carries the amdsmi_status_t code (get_error_code()); they map to
  the typed errors of base.py as NVML's do (nvml.py), after Zeus's zeus.device.gpu.amd.
Ranges are checked before the library sees a value. Defaults are restored on exit and on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import contextlib
from typing import Any

from wattserve.runtime.power.base import (
    GpuInitError,
    GpuNotFoundError,
    GpuNotSupportedError,
    GpuPermissionError,
    GpuPowerError,
    GpuRangeError,
    check_cap,
)
from wattserve.runtime.power.restore_on_exit import install_restore

AMDSMI_CODES: dict[str, tuple[int, type[GpuPowerError], str]] = {
    "AMDSMI_STATUS_INVAL": (1, GpuRangeError, "invalid argument (a value the device does not accept)"),
    "AMDSMI_STATUS_NOT_SUPPORTED": (2, GpuNotSupportedError, "not supported on this GPU (or in a VM guest)"),
    "AMDSMI_STATUS_NO_PERM": (10, GpuPermissionError, "no permission (power caps and clock limits need root)"),
    "AMDSMI_STATUS_INPUT_OUT_OF_BOUNDS": (17, GpuRangeError, "value out of the allowed range"),
    "AMDSMI_STATUS_INIT_ERROR": (18, GpuInitError, "AMD SMI could not initialise"),
    "AMDSMI_STATUS_NOT_FOUND": (31, GpuNotFoundError, "no such GPU"),
    "AMDSMI_STATUS_NOT_INIT": (32, GpuInitError, "AMD SMI is not initialised"),
    "AMDSMI_STATUS_DRIVER_NOT_LOADED": (34, GpuInitError, "the amdgpu driver is not loaded"),
}
UW = 1_000_000.0


def _code(e: Exception) -> int | None:
    get = getattr(e, "get_error_code", None)
    code = get() if callable(get) else getattr(e, "err_code", None)
    return None if code is None else int(code)


def amdsmi_error(lib: Any, what: str, e: Exception) -> GpuPowerError:
    code = _code(e)
    consts = getattr(lib, "amdsmi_wrapper", lib)
    for name, (default, cls, text) in AMDSMI_CODES.items():
        if code == getattr(consts, name, default):
            return cls(f"{what}: {text}")
    return GpuPowerError(f"{what}: {e}")


def _watts(v: Any) -> float | None:
    return None if v is None or isinstance(v, str) else float(v)


class AmdSmiGpuPower:
    modelled = False

    def __init__(self, indices: list[int | str] | None = None, amdsmi: Any = None,
                 install_handlers: bool = True) -> None:
        if amdsmi is None:
            try:
                import amdsmi  # type: ignore[import-not-found]
            except ImportError:
                raise GpuInitError("amdsmi is not installed (pip install amdsmi, matching the ROCm release)") from None
            except OSError as e:
                raise GpuInitError(f"amdsmi could not load libamd_smi.so ({e})") from None
        self.lib = amdsmi
        try:
            amdsmi.amdsmi_init()
            handles = list(amdsmi.amdsmi_get_processor_handles())
        except amdsmi.AmdSmiException as e:
            raise GpuInitError(f"AMD SMI could not start: {e}") from None
        idx: list[int | str] = list(indices) if indices is not None else list(range(len(handles)))
        if not idx:
            raise GpuNotFoundError("asked for no GPU")
        self.handles = [self._handle(d, handles) for d in idx]
        self.defaults_uw = [self._default_uw(h) for h in self.handles]
        self.energy0 = [self._energy_uj(h) for h in self.handles]
        self.touched: set[int] = set()
        self.locked: dict[int, int] = {}
        self.clock_tables: dict[int, list[int]] = {}
        if install_handlers:
            install_restore(self.restore)

    def _handle(self, device: int | str, handles: list[Any]) -> Any:
        if isinstance(device, int):
            if not 0 <= device < len(handles):
                raise GpuNotFoundError(f"asked for GPU {device}, AMD SMI sees {len(handles)}")
            return handles[device]
        for h in handles:
            if str(self._call("uuid", self.lib.amdsmi_get_gpu_device_uuid, h)) == device:
                return h
        raise GpuNotFoundError(f"GPU {device!r}: AMD SMI knows no GPU with that UUID")

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self.lib.AmdSmiException as e:
            raise amdsmi_error(self.lib, what, e) from None

    def _cap_info(self, i: int) -> dict[str, Any]:
        return self._call("power cap info", self.lib.amdsmi_get_power_cap_info, self.handles[i])

    def _default_uw(self, h: Any) -> int:
        info = self._call("power cap info", self.lib.amdsmi_get_power_cap_info, h)
        return int(info.get("default_power_cap", info.get("power_cap_default", info["power_cap"])))

    def _energy_uj(self, h: Any) -> float:
        d = self._call("energy", self.lib.amdsmi_get_energy_count, h)
        acc = d.get("energy_accumulator", d.get("power"))
        return float(acc) * float(d["counter_resolution"])

    def count(self) -> int:
        return len(self.handles)

    def name(self, i: int) -> str:
        return str(self._call("name", self.lib.amdsmi_get_gpu_asic_info, self.handles[i])["market_name"])

    def power_w(self, i: int) -> float:
        d = self._call("power", self.lib.amdsmi_get_power_info, self.handles[i])
        for key in ("socket_power", "current_socket_power", "average_socket_power"):
            w = _watts(d.get(key))
            if w is not None:
                return w
        raise GpuNotSupportedError(f"power (GPU {i}): the device reports no socket power")

    def energy_j(self, i: int) -> float:
        return (self._energy_uj(self.handles[i]) - self.energy0[i]) / UW

    def clock_mhz(self, i: int) -> int:
        d = self._call("clock", self.lib.amdsmi_get_clock_info, self.handles[i], self.lib.AmdSmiClkType.GFX)
        return int(d["clk"])

    def supported_clocks_mhz(self, i: int) -> list[int]:
        """The GFX DPM levels (amdsmi_get_clk_freq, Hz) with the GFX clock's min and max
        (amdsmi_get_clock_info, MHz), ascending: some py-interface releases cut the level list at
        num_supported - 1 and so drop the top level. Read once: the table is fixed."""
        if i not in self.clock_tables:
            h = self.handles[i]
            d = self._call("clock levels", self.lib.amdsmi_get_clk_freq, h, self.lib.AmdSmiClkType.SYS)
            levels = {int(round(f / 1e6)) for f in d["frequency"]}
            info = self._call("clock", self.lib.amdsmi_get_clock_info, h, self.lib.AmdSmiClkType.GFX)
            levels |= {int(info[k]) for k in ("min_clk", "max_clk") if isinstance(info.get(k), int)}
            self.clock_tables[i] = sorted(levels)
        return list(self.clock_tables[i])

    def locked_clock_mhz(self, i: int) -> int | None:
        return self.locked.get(i)

    def throttle_reasons(self, i: int) -> list[str]:
        """`sw_power_cap` while the package power tracker (PPT) limits the clock
        (amdsmi_get_violation_status: active_ppt_pwr, MI300 and newer); nothing where the part
        cannot tell."""
        read = getattr(self.lib, "amdsmi_get_violation_status", None)
        if read is None:
            return []
        try:
            v = read(self.handles[i])
        except self.lib.AmdSmiException:
            return []
        active = v.get("active_ppt_pwr")
        return ["sw_power_cap"] if active not in (None, "N/A", 0, False) else []

    def cap_range_w(self, i: int) -> tuple[float, float]:
        info = self._cap_info(i)
        return info["min_power_cap"] / UW, info["max_power_cap"] / UW

    def power_cap_w(self, i: int) -> float:
        return self._cap_info(i)["power_cap"] / UW

    def set_power_cap(self, i: int, watts: float) -> float:
        check_cap(i, watts, *self.cap_range_w(i))
        uw = int(round(watts * UW))
        self._call(f"set power cap (GPU {i})", self.lib.amdsmi_set_power_cap, self.handles[i], 0, uw)
        self.touched.add(i)
        back = self._cap_info(i)["power_cap"]
        if abs(back - uw) > UW:
            raise GpuPowerError(f"power_cap (GPU {i}): asked {watts:g} W, the device reports {back / UW:g} W")
        return back / UW

    def lock_clock(self, i: int, mhz: int | None) -> None:
        h = self.handles[i]
        if mhz is None:
            self._call(f"reset clocks (GPU {i})", self.lib.amdsmi_set_gpu_perf_level, h, self.lib.AmdSmiDevPerfLevel.AUTO)
            self.locked.pop(i, None)
            return
        table = self.supported_clocks_mhz(i)
        if table and not table[0] <= mhz <= table[-1]:
            raise GpuRangeError(f"clock (GPU {i}): {mhz} MHz is outside [{table[0]}, {table[-1]}] MHz")
        self._call(f"lock clocks (GPU {i})", self.lib.amdsmi_set_gpu_perf_determinism_mode, h, int(mhz))
        self.locked[i] = int(mhz)

    def restore(self) -> None:
        for i in sorted(self.touched):
            with contextlib.suppress(self.lib.AmdSmiException):
                self.lib.amdsmi_set_power_cap(self.handles[i], 0, self.defaults_uw[i])
        for i in sorted(self.locked):
            with contextlib.suppress(self.lib.AmdSmiException):
                self.lib.amdsmi_set_gpu_perf_level(self.handles[i], self.lib.AmdSmiDevPerfLevel.AUTO)
        self.touched.clear()
        self.locked.clear()
