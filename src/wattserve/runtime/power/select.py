"""Which power agent a server uses: NVML when it finds the GPUs, the model otherwise, never silently."""

from __future__ import annotations

from typing import Any

from wattserve.runtime.power.base import GpuPower, GpuPowerError


def select_power(backend: str, count: int, modelled_factory: Any) -> tuple[GpuPower, str]:
    """'nvml', 'modelled' or 'auto'. Auto uses NVML when it finds enough GPUs and otherwise falls
    back to the model, and says so in the returned note; it never falls back silently."""
    if backend not in ("auto", "nvml", "modelled"):
        raise GpuPowerError(f"power_backend: unknown value {backend!r}; allowed: auto, modelled, nvml")
    if backend == "modelled":
        return modelled_factory(), "power figures are modelled (--power-backend modelled)"
    try:
        from wattserve.runtime.power.nvml import NvmlGpuPower

        agent = NvmlGpuPower(indices=list(range(count)))
        return agent, f"power through NVML on {count} GPU(s)"
    except GpuPowerError as e:
        if backend == "nvml":
            raise
        return modelled_factory(), f"NVML unavailable ({e}); falling back to modelled power figures"
