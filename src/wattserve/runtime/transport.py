"""KV hand-off transports: how a prefill worker's KV reaches a decode worker.

`shm` (one host): the sender copies the KV into a POSIX shared-memory segment and passes its name;
the receiver copies it into its cache and unlinks the segment. `tcp` (any hosts): the bytes travel in
the frame itself. CUDA IPC is not implemented yet: on GPU, KV goes through host shared memory.
"""

from __future__ import annotations

from multiprocessing import shared_memory
from typing import Any, Protocol

import numpy as np
import torch

from wattserve.errors import unknown

TRANSPORTS = ("shm", "tcp")


class KvTransport(Protocol):
    name: str

    def put(self, kv: torch.Tensor) -> tuple[dict[str, Any], bytes]:
        """Handle (JSON-able) and inline payload bytes (empty if the handle points elsewhere)."""
        ...

    def get(self, handle: dict[str, Any], payload: bytes) -> torch.Tensor: ...

    def discard(self, handle: dict[str, Any]) -> None:
        """Free a handle that will never be read (the request was cancelled in transit)."""
        ...


def _np(kv: torch.Tensor) -> np.ndarray:
    return kv.detach().to(torch.float32).contiguous().numpy()


class ShmTransport:
    name = "shm"

    def put(self, kv: torch.Tensor) -> tuple[dict[str, Any], bytes]:
        arr = _np(kv)
        seg = shared_memory.SharedMemory(create=True, size=max(1, arr.nbytes))
        np.ndarray(arr.shape, dtype=arr.dtype, buffer=seg.buf)[...] = arr
        handle = {"kind": "shm", "name": seg.name, "shape": list(arr.shape)}
        seg.close()
        return handle, b""

    def get(self, handle: dict[str, Any], payload: bytes) -> torch.Tensor:
        seg = shared_memory.SharedMemory(name=handle["name"])
        try:
            arr = np.ndarray(tuple(handle["shape"]), dtype=np.float32, buffer=seg.buf).copy()
        finally:
            seg.close()
            seg.unlink()
        return torch.from_numpy(arr)

    def discard(self, handle: dict[str, Any]) -> None:
        try:
            seg = shared_memory.SharedMemory(name=handle["name"])
        except FileNotFoundError:
            return
        seg.close()
        seg.unlink()


class TcpTransport:
    name = "tcp"

    def put(self, kv: torch.Tensor) -> tuple[dict[str, Any], bytes]:
        arr = _np(kv)
        return {"kind": "tcp", "shape": list(arr.shape)}, arr.tobytes()

    def get(self, handle: dict[str, Any], payload: bytes) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(payload, dtype=np.float32).reshape(handle["shape"]).copy())

    def discard(self, handle: dict[str, Any]) -> None:
        return None


def make_transport(name: str) -> KvTransport:
    if name == "shm":
        return ShmTransport()
    if name == "tcp":
        return TcpTransport()
    raise unknown("kv_transport", name, TRANSPORTS)


def transport_for(handle: dict[str, Any]) -> KvTransport:
    return make_transport(handle["kind"])
