"""GPU power agents behind one protocol: NVML on NVIDIA GPUs, or the simulator's power model."""

from wattserve.runtime.power.base import GpuPower, GpuPowerError, select_power

__all__ = ["GpuPower", "GpuPowerError", "select_power"]
