"""The GpuPower protocol, shaped after Zeus's vendor-neutral GPU abstraction (zeus.device.gpu): one
object for all GPUs of a node, indexed by GPU, with readings (power, energy, clock, throttle
reasons) and controls (power cap, locked clock, restore defaults). No Zeus dependency."""

from __future__ import annotations

from typing import Any, Protocol

from wattserve.errors import UsageError


class GpuPowerError(UsageError):
    """A power operation failed or was refused: out of range, no permission, no GPU."""


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


def effective_lock(locked_mhz: int | None, requested_mhz: int | None) -> int | None:
    """The clock ceiling when both a control-plane lock and a step governor's request apply: the
    lower one (None for neither)."""
    if requested_mhz is None:
        return locked_mhz
    return int(requested_mhz) if locked_mhz is None else min(locked_mhz, int(requested_mhz))


def samples(agent: GpuPower) -> list[dict[str, Any]]:
    return [{"gpu": i, "power_w": agent.power_w(i), "cap_w": agent.power_cap_w(i), "clock_mhz": agent.clock_mhz(i),
             "energy_j": agent.energy_j(i), "modelled": agent.modelled} for i in range(agent.count())]
