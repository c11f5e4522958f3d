"""The GpuPower protocol, shaped after Zeus's vendor-neutral GPU abstraction (zeus.device.gpu): one
object for a set of GPUs (all of a node, or the one device a worker owns), indexed by GPU, with
readings (power, energy, clock, throttle reasons) and controls (power cap, locked clock, restore
defaults). No Zeus dependency.

Failures are typed as Zeus types them (zeus.device.exception: ZeusGPUNoPermissionError,
ZeusGPUNotSupportedError, ZeusGPUInvalidArgError, ZeusGPUNotFoundError, ZeusGPULostError, ...), so a
caller can tell "run as root" from "this GPU cannot" from "that value is out of range" without
parsing messages. Every one is a GpuPowerError, which is a UsageError: one line, exit 2 at the CLI.
"""

from __future__ import annotations

from typing import Any, Protocol

from wattserve.errors import UsageError


class GpuPowerError(UsageError):
    """A power operation failed or was refused: out of range, no permission, no GPU."""

    kind = "error"
    """A short stable name for the failure, carried over the wire by the worker-side ops."""


class GpuInitError(GpuPowerError):
    """The management library is missing or could not start (no driver, library not loaded)."""

    kind = "init"


class GpuRangeError(GpuPowerError):
    """A value outside what the device accepts (NVML_ERROR_INVALID_ARGUMENT,
    AMDSMI_STATUS_INVAL / AMDSMI_STATUS_INPUT_OUT_OF_BOUNDS)."""

    kind = "range"


class GpuPermissionError(GpuPowerError):
    """The caller may read but not set (NVML_ERROR_NO_PERMISSION, AMDSMI_STATUS_NO_PERM): power
    limits and clock locks need root or CAP_SYS_ADMIN."""

    kind = "permission"


class GpuNotSupportedError(GpuPowerError):
    """This device cannot do it (NVML_ERROR_NOT_SUPPORTED, AMDSMI_STATUS_NOT_SUPPORTED), e.g. a
    clock lock on a MIG slice or a power cap in a VM guest."""

    kind = "not_supported"


class GpuNotFoundError(GpuPowerError):
    """No such device: an index or UUID the library does not see (NVML_ERROR_NOT_FOUND,
    AMDSMI_STATUS_NOT_FOUND)."""

    kind = "not_found"


class GpuLostError(GpuPowerError):
    """The device fell off the bus or needs a reset (NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_RESET_REQUIRED)."""

    kind = "lost"


ERROR_KINDS: dict[str, type[GpuPowerError]] = {
    c.kind: c for c in (GpuPowerError, GpuInitError, GpuRangeError, GpuPermissionError, GpuNotSupportedError,
                        GpuNotFoundError, GpuLostError)}
"""The typed errors by `kind`, so a failure reported by a worker becomes the same type in the router."""


class GpuPower(Protocol):
    modelled: bool

    def count(self) -> int: ...

    def name(self, i: int) -> str: ...

    def power_w(self, i: int) -> float: ...

    def energy_j(self, i: int) -> float:
        """Energy since the agent started, joules."""
        ...

    def clock_mhz(self, i: int) -> int: ...

    def throttle_reasons(self, i: int) -> list[str]: ...

    def cap_range_w(self, i: int) -> tuple[float, float]: ...

    def power_cap_w(self, i: int) -> float: ...

    def set_power_cap(self, i: int, watts: float) -> float:
        """Set and read back; returns the cap the device reports. Refuses out-of-range values."""
        ...

    def lock_clock(self, i: int, mhz: int | None) -> None: ...

    def restore(self) -> None:
        """Put back the default cap and unlock clocks on every GPU this agent touched."""
        ...


class ClockTable(Protocol):
    """What an agent offers beyond GpuPower when it can: the clocks the device accepts and the
    lock in force. Optional (read with getattr), so older agents stay GpuPowers."""

    def supported_clocks_mhz(self, i: int) -> list[int]: ...

    def locked_clock_mhz(self, i: int) -> int | None: ...


def effective_lock(locked_mhz: int | None, requested_mhz: int | None) -> int | None:
    """The clock ceiling when both a control-plane lock and a step governor's request apply: the
    lower one (None for neither)."""
    if requested_mhz is None:
        return locked_mhz
    return int(requested_mhz) if locked_mhz is None else min(locked_mhz, int(requested_mhz))


def check_cap(i: int, watts: float, lo: float, hi: float) -> None:
    """Refuse a cap outside the device's range before the library sees it."""
    if not lo <= watts <= hi:
        raise GpuRangeError(f"power_cap (GPU {i}): {watts:g} W is outside the allowed range [{lo:g}, {hi:g}] W")


def samples(agent: GpuPower) -> list[dict[str, Any]]:
    return [{"gpu": i, "power_w": agent.power_w(i), "cap_w": agent.power_cap_w(i), "clock_mhz": agent.clock_mhz(i),
             "energy_j": agent.energy_j(i), "modelled": agent.modelled} for i in range(agent.count())]
