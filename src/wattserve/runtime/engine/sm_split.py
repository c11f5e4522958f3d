"""Disjoint SM partitions of one CUDA GPU for RAPID-Serve's two sides ("RAPID-Serve: Resource-efficient
and Accelerated P/D Intra-GPU Disaggregation", arXiv 2601.11822, which masks compute units on MI300X;
on an NVIDIA GPU the same control is a green context).

`torch.cuda.green_contexts.GreenContext.create(num_sms=n)` takes the first n SMs of the device, so two
of them overlap; a split needs one partition of the device into groups and contexts built from
disjoint subsets of them. That is the CUDA driver's resource API (CUDA 12.4+, compute capability 9.0
for 8-SM groups): `cuDevSmResourceSplitByCount` cuts the device's SMs into G groups of
`GROUP_SMS` (plus a remainder), and for every decode size k in 1..G-1 `cuDevResourceGenerateDesc`
and `cuGreenCtxCreate` build a decode context on groups [0, k) and a prefill context on the rest, each
with a stream (`cuGreenCtxStreamCreate`) that torch launches into through `torch.cuda.ExternalStream`.
The pool is built once at start, as the RAPID-Serve issue asks: changing a share is then choosing two
streams at a step boundary, not creating contexts. Overallocation uses two plain streams.

The driver calls come from NVIDIA's `cuda-python` bindings (`pip install cuda-python`, the `cuda`
extra); without them, or on a GPU whose driver refuses green contexts, `for_device` falls back to
`SharedUnits` (overallocation only) and says why. Not yet run on a GPU: the task that wrote it had
none (docs/rapid_serve.md).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from wattserve.runtime.engine.compute_split import ComputeSplit, Part, SharedUnits, Side

GROUP_SMS = 8
"""SMs per group: the smallest green-context partition on compute capability 9.0 (H100/H200)."""


class GreenContextSplit:
    """A pool of disjoint (decode, prefill) SM partitions, one pair per split point, plus two
    whole-device streams for overallocation. Units are SM groups."""

    kind = "green-contexts"

    def __init__(self, device: torch.device, driver: Any) -> None:
        self.device = device
        self._cu = driver
        torch.cuda.set_device(device)
        torch.zeros(1, device=device)
        cu_dev = self._call(driver.cuDeviceGet, device.index or 0)
        sm = self._call(driver.cuDeviceGetDevResource, cu_dev, driver.CUdevResourceType.CU_DEV_RESOURCE_TYPE_SM)
        self.total_sms = int(sm.sm.smCount)
        groups, count, remaining = self._call(driver.cuDevSmResourceSplitByCount, self.total_sms // GROUP_SMS,
                                               sm, 0, GROUP_SMS)
        count = int(count)
        if count < 2:
            raise RuntimeError(f"{self.total_sms} SMs split into {count} group(s) of {GROUP_SMS}; a split needs 2")
        self.units: Part = tuple(range(count))
        self.group_sms = tuple(int(g.sm.smCount) for g in groups[:count])
        rest = [remaining] if int(remaining.sm.smCount) > 0 else []
        self._greens: list[Any] = []
        self._raw_streams: list[Any] = []
        self.streams: dict[tuple[Side, Part], torch.cuda.ExternalStream] = {}
        self.whole = {side: torch.cuda.Stream(device) for side in ("decode", "prefill")}
        try:
            for k in range(1, count):
                self.streams[("decode", self.units[:k])] = self._stream(cu_dev, list(groups[:k]))
                self.streams[("prefill", self.units[k:])] = self._stream(cu_dev, [*groups[k:count], *rest])
        except Exception:
            self.close()
            raise

    def _call(self, fn: Any, *args: Any) -> Any:
        err, *out = fn(*args)
        if err != self._cu.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"{fn.__name__} failed: {err}")
        return out[0] if len(out) == 1 else tuple(out)

    def _stream(self, cu_dev: Any, resources: list[Any]) -> torch.cuda.ExternalStream:
        cu = self._cu
        desc = self._call(cu.cuDevResourceGenerateDesc, resources, len(resources))
        green = self._call(cu.cuGreenCtxCreate, desc, cu_dev, cu.CUgreenCtxCreate_flags.CU_GREEN_CTX_DEFAULT_STREAM)
        self._greens.append(green)
        raw = self._call(cu.cuGreenCtxStreamCreate, green, cu.CUstream_flags.CU_STREAM_NON_BLOCKING, 0)
        self._raw_streams.append(raw)
        return torch.cuda.ExternalStream(int(raw), device=self.device)

    def sms(self, part: Part) -> int:
        """SMs in a part's groups (a prefill partition also holds the split's remainder, not counted)."""
        return sum(self.group_sms[u] for u in part)

    def enter(self, side: Side, part: Part) -> bool:
        torch.cuda.set_device(self.device)
        if part == self.units:
            torch.cuda.set_stream(self.whole[side])
            return True
        stream = self.streams.get((side, part))
        if stream is None:
            raise ValueError(f"no {side} partition on groups {part}; the pool splits at a prefix of {self.units}")
        torch.cuda.set_stream(stream)
        return True

    def restore(self) -> None:
        torch.cuda.set_stream(torch.cuda.default_stream(self.device))

    def close(self) -> None:
        """Destroy the pool's streams and contexts once the device is idle."""
        with contextlib.suppress(Exception):
            torch.cuda.synchronize(self.device)
        for raw in self._raw_streams:
            with contextlib.suppress(Exception):
                self._cu.cuStreamDestroy(raw)
        for green in self._greens:
            with contextlib.suppress(Exception):
                self._cu.cuGreenCtxDestroy(green)
        self._raw_streams.clear()
        self._greens.clear()
        self.streams.clear()


def for_device(device: torch.device) -> tuple[ComputeSplit, str | None]:
    """The best split a CUDA device offers, and why it is not green contexts when it is not."""
    try:
        from cuda.bindings import driver
    except ImportError:
        return SharedUnits(device), ("cuda-python is not installed (pip install 'wattserve[cuda]'); "
                                     "prefill and decode overallocate the GPU on two streams")
    try:
        return GreenContextSplit(device, driver), None
    except (RuntimeError, AttributeError) as e:
        return SharedUnits(device), f"no green contexts on {device} ({e}); prefill and decode overallocate it"
