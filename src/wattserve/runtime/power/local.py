"""The power agent of the one device a worker runs on.

Each worker opens its own device (count() == 1), so the router holds no hardware handle and each
device is driven by the process that uses it, as in Zeus, where each process or per-node daemon
opens the GPUs it was given (zeus.device.get_gpus honours CUDA_VISIBLE_DEVICES the same way).

Which NVML device is `cuda:N`: CUDA numbers only the devices CUDA_VISIBLE_DEVICES lists, in its
order; an entry is an index or a UUID (`GPU-...`, a MIG instance `MIG-...`), and parsing stops at
the first entry that is neither, as CUDA does (CUDA C Programming Guide, "CUDA Environment
Variables"). So `cuda:N` is the N-th entry: an integer is taken as an NVML index, a UUID is opened
with nvmlDeviceGetHandleByUUID (a MIG instance's power and clocks are its parent GPU's, so workers
on slices of one GPU share, and contend for, one cap and one clock lock). NVML
numbers GPUs in PCI bus order; CUDA does too with CUDA_DEVICE_ORDER=PCI_BUS_ID, and on a node of
identical GPUs its default order (fastest first, ties by PCI bus) is the same. On ROCm, torch's
`cuda:N` is the N-th GPU left by ROCR_VISIBLE_DEVICES and then HIP_VISIBLE_DEVICES (or
CUDA_VISIBLE_DEVICES when HIP's is unset), indexes into amdsmi_get_processor_handles().
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

from wattserve.runtime.power.base import GpuNotFoundError, GpuPower, GpuPowerError
from wattserve.runtime.power.modelled import ModelledGpuPower

BACKENDS = ("auto", "nvml", "amdsmi", "modelled")
_UUID = re.compile(r"^(GPU|MIG)-[0-9A-Za-z/_-]+$")


def parse_visible(value: str) -> list[int | str]:
    """A *_VISIBLE_DEVICES list as the CUDA runtime reads it: indices and UUIDs, up to the first
    entry that is neither (or a repeat)."""
    out: list[int | str] = []
    for raw in value.split(","):
        e = raw.strip()
        if re.fullmatch(r"\d+", e):
            entry: int | str = int(e)
        elif _UUID.match(e):
            entry = e
        else:
            break
        if entry in out:
            break
        out.append(entry)
    return out


def device_index(device: str) -> int:
    """`cuda` -> 0, `cuda:N` -> N."""
    kind, _, idx = device.partition(":")
    if kind != "cuda" or (idx and not idx.isdigit()):
        raise GpuNotFoundError(f"device: {device!r} is not a CUDA device; allowed: cuda, cuda:N")
    return int(idx) if idx else 0


def visible_device(index: int, *lists: str | None) -> int | str:
    """The library's device for the index-th visible device, through each visibility list in turn
    (None: the variable is unset, which hides nothing)."""
    chosen: int | str = index
    for value in reversed([v for v in lists if v is not None]):
        entries = parse_visible(value)
        if isinstance(chosen, str):
            break
        if chosen >= len(entries):
            raise GpuNotFoundError(f"device: visible device {chosen} does not exist; the visibility list "
                                   f"{value!r} names {len(entries)}")
        chosen = entries[chosen]
    return chosen


def _stderr_note(message: str) -> None:
    print(f"wattserve worker: {message}", file=sys.stderr, flush=True)


def open_device_power(backend: str, device: str, gpu: str, power_as_model: str, stats: Callable[[], dict],
                      *, env: Mapping[str, str] | None = None, nvml: Any = None, amdsmi: Any = None,
                      note: Callable[[str], None] = _stderr_note, install_handlers: bool = True) -> GpuPower:
    """The agent for this worker's one device. backend: auto (modelled on CPU, NVML on CUDA; a
    CUDA worker without NVML falls back to the model and says so through `note`, never silently),
    nvml, amdsmi or modelled. `stats` returns this worker's engine counters (busy_s, steps, tokens,
    role, governor_clock_mhz) for the modelled agent; it must not itself read this agent.
    `gpu`/`power_as_model` are the catalog GPU and model the modelled agent stands for."""
    if backend not in BACKENDS:
        raise GpuPowerError(f"power_backend: unknown value {backend!r}; allowed: {', '.join(sorted(BACKENDS))}")
    env = os.environ if env is None else env

    def modelled() -> GpuPower:
        return ModelledGpuPower(1, gpu, power_as_model, lambda i: stats())

    if backend == "modelled" or (backend == "auto" and not device.startswith("cuda")):
        return modelled()
    index = device_index(device)
    if backend == "amdsmi":
        from wattserve.runtime.power.amdsmi import AmdSmiGpuPower

        hip = env.get("HIP_VISIBLE_DEVICES", env.get("CUDA_VISIBLE_DEVICES"))
        target = visible_device(index, env.get("ROCR_VISIBLE_DEVICES"), hip)
        return AmdSmiGpuPower(indices=[target], amdsmi=amdsmi, install_handlers=install_handlers)
    from wattserve.runtime.power.nvml import NvmlGpuPower

    target = visible_device(index, env.get("CUDA_VISIBLE_DEVICES"))
    try:
        return NvmlGpuPower(indices=[target], nvml=nvml, install_handlers=install_handlers)
    except GpuPowerError as e:
        if backend == "nvml":
            raise
        note(f"NVML unavailable for {device} ({e}); falling back to modelled power figures")
        return modelled()
