"""A POSIX shared-memory segment that no resource tracker follows, on every Python version.

Python's `SharedMemory` registers a segment with the resource tracker when it creates it, and
before 3.13 also when it attaches to it (3.13 added `track=False`). A server's worker processes
share the server's tracker, so a worker killed between registering a segment and unregistering it
leaves a registration behind; the server sweeps the segment (transport.sweep), and at exit the
tracker tries to unlink it again and warns of a "leaked" segment that is already gone. KV
hand-off segments have owners that sweep them (transport.py), so they need no tracker: this is
3.13's `SharedMemory(track=False)`, written over the same `_posixshmem` calls, for 3.11 and 3.12
too."""

from __future__ import annotations

import mmap
import os

try:
    import _posixshmem
except ImportError:  # pragma: no cover - not a POSIX system
    _posixshmem = None


class Segment:
    """One named segment mapped into this process. `create` makes it (FileExistsError if the name is
    taken); otherwise it attaches (FileNotFoundError if there is none)."""

    def __init__(self, name: str, create: bool = False, size: int = 0) -> None:
        if _posixshmem is None:
            raise OSError("POSIX shared memory is not available here; use the tcp transport")
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = _posixshmem.shm_open("/" + name, flags, mode=0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            else:
                size = os.fstat(fd).st_size
            self._map = mmap.mmap(fd, size)
        except BaseException:
            if create:
                _posixshmem.shm_unlink("/" + name)
            raise
        finally:
            os.close(fd)
        self.name = name
        self.buf = memoryview(self._map)

    def close(self) -> None:
        self.buf.release()
        self._map.close()

    def unlink(self) -> None:
        _posixshmem.shm_unlink("/" + self.name)
