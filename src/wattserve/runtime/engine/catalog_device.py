"""Which catalog device an engine runs on: what its profile rows and step logs name, so that the
simulator prices them on the right GpuSpec."""

from __future__ import annotations

from typing import Any

from wattserve.catalog.gpus import gpu_key


def device_name(raw: str) -> str:
    """The catalog GPU for torch's name of a CUDA device ('NVIDIA H100 80GB HBM3' -> 'h100'); the raw
    name when the catalog has no such GPU."""
    return gpu_key(raw) or raw


def catalog_device(device: Any) -> str:
    """`cpu` for a CPU torch.device (the catalog's nominal `cpu`), else the CUDA device's catalog GPU."""
    if device.type != "cuda":
        return "cpu"
    import torch

    return device_name(torch.cuda.get_device_name(device))
