"""The router's handle on one worker process: its connection, liveness, placements and load."""

from __future__ import annotations

import asyncio
from typing import Any

from wattserve.runtime import wire


class WorkerClient:
    """One worker as the router sees it, and that worker's `LoadView` for the routing policy.

    `alive` turns False once (`down_reason` is set), when the worker's socket closes or its process
    exits; a dead worker is never sent anything again (writes to a closed transport are what flooded
    the log with "socket.send() raised exception")."""

    def __init__(self, wid: int, role: str, host: str, port: int, proc: Any = None) -> None:
        self.wid = wid
        self.role = role
        self.host = host
        self.port = port
        self.proc = proc
        self.switching_to: str | None = None
        self.stats: dict[str, Any] = {"wid": wid, "role": role, "running": 0, "waiting": 0, "kv_usage": 0.0,
                                      "kv_blocks_used": 0, "kv_blocks": 0, "busy_s": 0.0}
        self.inflight = 0
        self.prefill_queue: dict[str, int] = {}
        """Prompt tokens of each request placed here that has not produced its first token."""
        self.decoding: set[str] = set()
        """Requests placed here past their first token (decoding, joining or arriving with KV)."""
        self.output_tokens = 0
        """Tokens this worker produced, counted as their events arrive (monotonic)."""
        self.completed = 0
        """Requests whose last token this worker produced (monotonic)."""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.role_ready = asyncio.Event()
        self.stats_ready = asyncio.Event()
        """Set once the worker has reported its stats: until then `stats` holds placeholders."""
        self.down_reason: str | None = None
        """Why the worker is down; None while it serves."""

    @property
    def alive(self) -> bool:
        return self.down_reason is None

    @property
    def pending_prefill_tokens(self) -> int:
        return sum(self.prefill_queue.values())

    @property
    def decode_load(self) -> int:
        return len(self.decoding)

    @property
    def kv_live_blocks(self) -> int:
        return int(self.stats.get("kv_blocks_used", 0))

    @property
    def kv_blocks(self) -> int:
        return int(self.stats.get("kv_blocks", 0))

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def send(self, header: dict[str, Any], payload: bytes = b"") -> bool:
        """Write a frame; False (and nothing written) when the worker is down or its socket closing."""
        if not self.alive or self.writer is None or self.writer.is_closing():
            return False
        self.writer.write(wire.encode(header, payload))
        return True

    def mark_down(self, reason: str) -> bool:
        """Record the worker as dead; False if it already was. Wakes anyone waiting on it."""
        if not self.alive:
            return False
        self.down_reason = reason
        self.switching_to = None
        self.stats_ready.set()
        self.role_ready.set()
        if self.writer is not None and not self.writer.is_closing():
            self.writer.close()
        return True

    def exit_reason(self) -> str:
        """How the process ended, in words ("killed by signal 9", "exit code 1"), or that it is running."""
        code = getattr(self.proc, "exitcode", None)
        if code is None:
            return "connection closed"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"
