"""GPU power agents behind one protocol: NVML on NVIDIA GPUs, AMD SMI on AMD GPUs, or the
simulator's power model; one device per worker (local.py, ops.py, device.py) with the router's view
over the workers (remote.py)."""

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

__all__ = ["GpuInitError", "GpuLostError", "GpuNotFoundError", "GpuNotSupportedError", "GpuPermissionError",
           "GpuPower", "GpuPowerError", "GpuRangeError"]
