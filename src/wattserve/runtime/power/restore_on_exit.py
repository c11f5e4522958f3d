"""Put a device's defaults back when the process ends, as Zeus does for the limits it set: at exit,
and on SIGTERM/SIGINT (then the previous handler runs, or the process exits 128+signal)."""

from __future__ import annotations

import atexit
import signal
from collections.abc import Callable
from typing import Any


def install_restore(restore: Callable[[], None]) -> None:
    atexit.register(restore)
    for sig in (signal.SIGTERM, signal.SIGINT):
        prev = signal.getsignal(sig)

        def handler(signum: int, frame: Any, prev: Any = prev) -> None:
            restore()
            if callable(prev):
                prev(signum, frame)
            else:
                raise SystemExit(128 + signum)

        signal.signal(sig, handler)
