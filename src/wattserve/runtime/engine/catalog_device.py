"""Which catalog device an engine runs on: what its profile rows and step logs name, so that the
simulator prices them on the right GpuSpec."""

from __future__ import annotations

from typing import Any

CUDA_NAMES = (("h100 pcie", "h100-pcie"), ("h100", "h100"), ("h200", "h200"), ("a100-sxm4-40gb", "a100-40gb"),
              ("a100", "a100"), ("mi300x", "mi300x"))
"""(substring of torch's lower-cased device name, catalog GPU), most specific first."""


def device_name(raw: str) -> str:
    """The catalog GPU for torch's name of a CUDA device ('NVIDIA H100 80GB HBM3' -> 'h100'); the raw
    name when the catalog has no such GPU."""
    low = raw.lower()
    return next((name for key, name in CUDA_NAMES if key in low), raw)


def catalog_device(device: Any) -> str:
    """`cpu` for a CPU torch.device (the catalog's nominal `cpu`), else the CUDA device's catalog GPU."""
    if device.type != "cuda":
        return "cpu"
    import torch

    return device_name(torch.cuda.get_device_name(device))
