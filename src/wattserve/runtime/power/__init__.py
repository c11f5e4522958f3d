"""GPU power agents behind one protocol: NVML on NVIDIA GPUs, AMD SMI on AMD GPUs, or the
simulator's power model; node-level (select.py) or one device per worker (local.py, ops.py) with the
router's view over the workers (remote.py)."""

from wattserve.runtime.power.base import (
    GpuInitError,
    GpuLostError,
    GpuNotFoundError,
    GpuNotSupportedError,
    GpuPermissionError,
    GpuPower,
    GpuPowerError,
    GpuRangeError,
)
from wattserve.runtime.power.select import select_power

__all__ = ["GpuInitError", "GpuLostError", "GpuNotFoundError", "GpuNotSupportedError", "GpuPermissionError",
           "GpuPower", "GpuPowerError", "GpuRangeError", "select_power"]
