"""The control plane's side of the node agents: every GPU of several `wattserve agent`s as one
GpuPower, GPU i being the i-th GPU in the order the agents were given and listed their GPUs.

It is `remote.WorkerPower` over HTTP instead of over a worker's socket: the agents answer with the
same readings (`ops.power_stats`, polled every `period_s`) and the same op events
(`ops.power_op`), so range checks before sending, read-backs winning over older readings, and
failures kept for the actuation log all work as they do for our own workers. An agent that stops
answering is marked down: its GPUs keep their last readings (a cap set before it went away is
still the best knowledge of what the GPU holds) and any op sent to them is refused at once as a
lost GPU, so a control loop never waits on a dead node.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from wattserve.errors import UsageError
from wattserve.runtime.power.remote import WorkerPower


@dataclass
class AgentLink:
    """One agent: its URL, its GPUs' latest listing, and whether it answered the last poll."""

    url: str
    listing: list[dict[str, Any]] = field(default_factory=list)
    alive: bool = True
    error: str | None = None
    down_since: float | None = None


class AgentPool:
    def __init__(self, urls: list[str], token: str | None = None, timeout_s: float = 2.0) -> None:
        self.links = [AgentLink(u.rstrip("/")) for u in urls]
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.gpus: list[tuple[AgentLink, int]] = []
        self.power: WorkerPower | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=self.headers)
        return self._session

    async def start(self) -> WorkerPower:
        """Read every agent once; one that cannot be read is refused (field `agents`), since the
        budget cannot be held over GPUs nobody can see."""
        await asyncio.gather(*(self._refresh(link) for link in self.links))
        for link in self.links:
            if not link.alive:
                raise UsageError(f"agent {link.url} did not answer ({link.error}); allowed: URLs of running "
                                 "`wattserve agent`s", "agents")
            if not link.listing:
                raise UsageError(f"agent {link.url} has no GPUs", "agents")
        self.gpus = [(link, j) for link in self.links for j in range(len(link.listing))]
        self.power = WorkerPower(len(self.gpus), self._send, self._stats)
        return self.power

    async def _refresh(self, link: AgentLink) -> None:
        try:
            async with self.session.get(f"{link.url}/v1/gpus") as r:
                body = await r.json(content_type=None)
                if r.status != 200:
                    raise RuntimeError(((body or {}).get("error") or {}).get("message") or f"HTTP {r.status}")
            link.listing = list(body["gpus"])
            link.alive, link.error, link.down_since = True, None, None
        except (aiohttp.ClientError, TimeoutError, RuntimeError, KeyError, TypeError, ValueError) as e:
            self._down(link, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)

    def _down(self, link: AgentLink, error: str) -> None:
        if link.alive:
            link.down_since = time.monotonic()
        link.alive, link.error = False, error

    async def poll(self) -> None:
        await asyncio.gather(*(self._refresh(link) for link in self.links))

    def _stats(self, i: int) -> dict[str, Any]:
        link, j = self.gpus[i]
        return {"power": link.listing[j]} if j < len(link.listing) else {}

    def _send(self, i: int, header: dict[str, Any]) -> None:
        link, j = self.gpus[i]
        if not link.alive:
            raise ConnectionError(f"agent {link.url} is down ({link.error})")
        task = asyncio.get_running_loop().create_task(self._op(i, link, j, header))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _op(self, i: int, link: AgentLink, j: int, header: dict[str, Any]) -> None:
        op = header["op"]
        base = f"{link.url}/v1/gpus/{j}"
        if op == "set_cap":
            method, url, body = "POST", f"{base}/power_cap", {"watts": header["watts"]}
        elif op == "lock_clock":
            method, url, body = "POST", f"{base}/locked_clock", {"mhz": header.get("mhz")}
        else:
            method, url, body = "POST", f"{link.url}/v1/restore", {}
        try:
            async with self.session.request(method, url, json=body) as r:
                got = await r.json(content_type=None)
            ev = got if r.status == 200 else dict(got.get("readback") or {
                "ev": "power", "op": op, "ok": False, "t": None, "error_kind": got["error"].get("type"),
                "error": got["error"].get("message")})
        except (aiohttp.ClientError, TimeoutError, KeyError, TypeError, ValueError, AttributeError) as e:
            self._down(link, f"{type(e).__name__}: {e}")
            ev = {"ev": "power", "op": op, "ok": False, "t": None, "error_kind": "lost",
                  "error": f"{op} (GPU {i}): agent {link.url} did not answer ({type(e).__name__})"}
        ev["seq"] = header.get("seq")
        ev.setdefault("value", header.get("watts") if op == "set_cap" else header.get("mhz"))
        if self.power is not None:
            self.power.on_event(i, ev)

    async def restore(self) -> list[str]:
        """Ask every live agent to put its defaults back; returns the URLs that could not be asked."""
        failed: list[str] = []
        for link in self.links:
            try:
                async with self.session.post(f"{link.url}/v1/restore", json={}) as r:
                    await r.read()
                    if r.status != 200:
                        failed.append(link.url)
            except (aiohttp.ClientError, TimeoutError):
                failed.append(link.url)
        return failed

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._session is not None:
            await self._session.close()
