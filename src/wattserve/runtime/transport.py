"""KV hand-off transports: how a prefill worker's KV reaches a decode worker.

KV travels in its own dtype (a bf16 cache hands off bf16: half the bytes of float32), as raw bytes
with the dtype and shape in the handle. `shm` (one host): the sender copies the KV into a POSIX
shared-memory segment and passes its name; the receiver copies it into its cache and unlinks the
segment. `tcp` (any hosts): the receiver pulls the bytes from the sender's KvStore over its own
connection (kv_store.py); the router passes only the handle. CUDA IPC is not implemented yet:
on GPU, KV goes through host shared memory.

Segment ownership: every segment's name starts with its owner's prefix, `wsv<server pid>-<worker
id>-` (`owner_prefix`), so when a worker or the server dies, `sweep(prefix)` unlinks what it left
(`server_prefix` covers every worker of one server). Segments are opened without Python's resource
tracker (`shm_segment.Segment`), and the one process that unlinks a segment is the one that read
or discarded it. What a tracker would do at the creator's exit, a sweep of the creator's own prefix
at exit does (a worker that exits normally leaves nothing); a killed owner's segments need `sweep`
from whoever outlives it.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from wattserve.errors import unknown
from wattserve.runtime.kv_store import KvStore, pull
from wattserve.runtime.shm_segment import Segment

if TYPE_CHECKING:
    import torch

TRANSPORTS = ("shm", "tcp")
SHM_DIR = Path("/dev/shm")
ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}
"""The KV dtypes a handle may carry, and their bytes per element. torch is imported where a tensor
is made or read, not here: the router reads handles (to discard them) and never imports torch."""


class KvTransport(Protocol):
    name: str

    def put(self, kv: torch.Tensor) -> tuple[dict[str, Any], bytes]:
        """Handle (JSON-able) and inline payload bytes (empty if the handle points elsewhere)."""
        ...

    def get(self, handle: dict[str, Any], payload: bytes) -> torch.Tensor: ...

    def discard(self, handle: dict[str, Any]) -> None:
        """Free a handle that will never be read (the request was cancelled in transit)."""
        ...


def server_prefix(server_pid: int) -> str:
    return f"wsv{server_pid}-"


def owner_prefix(server_pid: int, worker_id: int) -> str:
    """Short (POSIX allows 31 characters on some systems): 'wsv12345-3-' plus a counter."""
    return f"{server_prefix(server_pid)}{worker_id}-"


def _raw(kv: torch.Tensor) -> tuple[dict[str, Any], np.ndarray]:
    import torch

    t = kv.detach().cpu().contiguous()
    name = str(t.dtype).removeprefix("torch.")
    if name not in ITEMSIZE:
        raise ValueError(f"KV dtype {t.dtype} cannot be handed off; allowed: {', '.join(ITEMSIZE)}")
    return {"shape": list(t.shape), "dtype": name}, t.view(-1).view(torch.uint8).numpy()


def _tensor(handle: dict[str, Any], raw: bytes | bytearray | memoryview) -> torch.Tensor:
    import torch

    name = handle.get("dtype", "float32")
    if name not in ITEMSIZE:
        raise ValueError(f"KV dtype {name} cannot be handed off; allowed: {', '.join(ITEMSIZE)}")
    dtype = getattr(torch, name)
    flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if len(raw) else torch.empty(0, dtype=torch.uint8)
    return flat.view(dtype).reshape(handle["shape"])


def _nbytes(handle: dict[str, Any]) -> int:
    n = ITEMSIZE[handle.get("dtype", "float32")]
    for d in handle["shape"]:
        n *= d
    return n


def live_segments(prefix: str) -> list[str]:
    """Shared-memory segments whose name starts with `prefix` (Linux: /dev/shm; elsewhere none seen)."""
    if not SHM_DIR.is_dir():
        return []
    return sorted(p.name for p in SHM_DIR.iterdir() if p.name.startswith(prefix))


def sweep(prefix: str, keep: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Unlink every segment named with `prefix` (its owner died, or is shutting down) except those in
    `keep` (handles still on their way to a reader); returns the ones unlinked."""
    gone = []
    for name in live_segments(prefix):
        if name in keep:
            continue
        try:
            (SHM_DIR / name).unlink()
            gone.append(name)
        except FileNotFoundError:
            pass
    return gone


class ShmTransport:
    name = "shm"

    def __init__(self, prefix: str | None = None) -> None:
        """`prefix` names this transport's segments (`owner_prefix`); default: this process's own."""
        self.prefix = prefix if prefix is not None else owner_prefix(os.getpid(), 0)
        self._counter = itertools.count()
        self._swept_at_exit = False

    def put(self, kv: torch.Tensor) -> tuple[dict[str, Any], bytes]:
        meta, arr = _raw(kv)
        if not self._swept_at_exit:
            atexit.register(sweep, self.prefix)
            self._swept_at_exit = True
        while True:
            name = f"{self.prefix}{next(self._counter)}"
            try:
                seg = Segment(name, create=True, size=max(1, arr.nbytes))
                break
            except FileExistsError:
                continue
        try:
            np.ndarray(arr.shape, dtype=np.uint8, buffer=seg.buf)[...] = arr
        finally:
            seg.close()
        return {"kind": "shm", "name": name, **meta}, b""

    def get(self, handle: dict[str, Any], payload: bytes) -> torch.Tensor:
        seg = Segment(handle["name"])
        try:
            return _tensor(handle, seg.buf[:_nbytes(handle)])
        finally:
            seg.close()
            self._unlink(seg)

    def discard(self, handle: dict[str, Any]) -> None:
        try:
            seg = Segment(handle["name"])
        except FileNotFoundError:
            return
        seg.close()
        self._unlink(seg)

    @staticmethod
    def _unlink(seg: Segment) -> None:
        with contextlib.suppress(FileNotFoundError):
            seg.unlink()


class TcpTransport:
    """KV pulled by the decode worker straight from the exporting worker's KvStore (any hosts): the
    handle says where; the router carries the handle, never the bytes."""

    name = "tcp"

    def __init__(self, prefix: str | None = None, host: str = "127.0.0.1") -> None:
        self.prefix = prefix
        self.host = host
        self._store: KvStore | None = None

    @property
    def store(self) -> KvStore:
        if self._store is None:
            self._store = KvStore(self.host)
        return self._store

    def put(self, kv: torch.Tensor) -> tuple[dict[str, Any], bytes]:
        meta, arr = _raw(kv)
        key = self.store.put(arr.tobytes())
        return {"kind": "tcp", "host": self.store.host, "port": self.store.port, "key": key, **meta}, b""

    def get(self, handle: dict[str, Any], payload: bytes) -> torch.Tensor:
        return _tensor(handle, pull(handle) if "key" in handle else payload)

    def discard(self, handle: dict[str, Any]) -> None:
        """Nothing to do here: the owner's store drops unpulled KV after its TTL (a network call
        from the router's event loop to drop it now could stall every request)."""
        return None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def make_transport(name: str, prefix: str | None = None, host: str = "127.0.0.1") -> KvTransport:
    """`prefix`: the owner prefix of the segments this transport creates (shm); `host`: the address
    its KV store binds (tcp)."""
    if name == "shm":
        return ShmTransport(prefix)
    if name == "tcp":
        return TcpTransport(prefix, host)
    raise unknown("kv_transport", name, TRANSPORTS)


def transport_for(handle: dict[str, Any]) -> KvTransport:
    """A transport able to read or discard `handle` (it creates nothing, so needs no prefix)."""
    return make_transport(handle["kind"])
