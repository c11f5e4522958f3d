"""Which power agent a server uses: NVML or AMD SMI when it finds the GPUs, the model otherwise,
never silently."""

from __future__ import annotations

from typing import Any

from wattserve.runtime.power.base import GpuPower, GpuPowerError

BACKENDS = ("amdsmi", "auto", "modelled", "nvml")


def select_power(backend: str, count: int, modelled_factory: Any) -> tuple[GpuPower, str]:
    """'nvml', 'amdsmi', 'modelled' or 'auto'. Auto uses NVML when it finds enough GPUs and
    otherwise falls back to the model, and says so in the returned note; it never falls back
    silently. 'amdsmi' (ROCm GPUs) is never guessed: it is asked for by name."""
    if backend not in BACKENDS:
        raise GpuPowerError(f"power_backend: unknown value {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend == "modelled":
        return modelled_factory(), "power figures are modelled (--power-backend modelled)"
    if backend == "amdsmi":
        from wattserve.runtime.power.amdsmi import AmdSmiGpuPower

        return AmdSmiGpuPower(indices=list(range(count))), f"power through AMD SMI on {count} GPU(s)"
    try:
        from wattserve.runtime.power.nvml import NvmlGpuPower

        agent = NvmlGpuPower(indices=list(range(count)))
        return agent, f"power through NVML on {count} GPU(s)"
    except GpuPowerError as e:
        if backend == "nvml":
            raise
        return modelled_factory(), f"NVML unavailable ({e}); falling back to modelled power figures"
