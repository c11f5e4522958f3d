"""GPU power agents behind one protocol: NVML on NVIDIA GPUs, or the simulator's power model."""

from wattserve.runtime.power.base import GpuPower, GpuPowerError
from wattserve.runtime.power.select import select_power

__all__ = ["GpuPower", "GpuPowerError", "select_power"]
