"""Put a device's defaults back when the process ends, as Zeus does for the limits it set: at exit,
and on SIGTERM/SIGINT (then the previous handler runs, or the process exits 128+signal). Signal
handlers can only be set from the main thread: a worker running on another thread (a Ray actor's,
runtime/ray_launcher.py) restores at exit only, and its actor's end restores through the worker's
own shutdown path."""

from __future__ import annotations

import atexit
import signal
import threading
from collections.abc import Callable
from typing import Any


def install_restore(restore: Callable[[], None]) -> None:
    atexit.register(restore)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        prev = signal.getsignal(sig)

        def handler(signum: int, frame: Any, prev: Any = prev) -> None:
            restore()
            if callable(prev):
                prev(signum, frame)
            else:
                raise SystemExit(128 + signum)

        signal.signal(sig, handler)
