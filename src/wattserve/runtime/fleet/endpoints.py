"""The engines of a fleet as the control plane sees them: each endpoint's /metrics, scraped every
poll, turned into an EngineReading and a window of latency histograms.

An endpoint whose scrape fails `down_after` times in a row (refused, timed out, not the engine's
page) is down: the back end shows it as an instance with alive=False, which policies leave out, and
it comes back the first time a scrape succeeds. Counters keep their last values while it is down,
so differences taken by controllers never go negative."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from wattserve.errors import UsageError
from wattserve.runtime.fleet.engines import EngineReading, EngineSpec, LatencyWindow, read_engine
from wattserve.runtime.fleet.prom import parse_metrics


@dataclass
class Endpoint:
    url: str
    role: str
    reading: EngineReading | None = None
    window: LatencyWindow = field(default_factory=LatencyWindow)
    alive: bool = True
    failures: int = 0
    error: str | None = None
    down_at_s: list[float] = field(default_factory=list)
    """Times (seconds since the pool started) it was marked down."""
    up_at_s: list[float] = field(default_factory=list)
    """Times it came back after being down."""


class EndpointPool:
    def __init__(self, urls: tuple[str, ...], roles: tuple[str, ...], spec: EngineSpec, timeout_s: float = 2.0,
                 down_after: int = 2, note: Callable[[str], None] = lambda s: None) -> None:
        self.endpoints = [Endpoint(u, r) for u, r in zip(urls, roles, strict=True)]
        self.spec = spec
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.down_after = down_after
        self.note = note
        self.t0 = time.monotonic()
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def start(self) -> None:
        """Scrape every endpoint once: one that cannot be read, or whose page is not this engine's,
        is refused (field `endpoints`), since a policy cannot manage what it cannot see."""
        errors = await asyncio.gather(*(self._scrape(e) for e in self.endpoints))
        for e, err in zip(self.endpoints, errors, strict=True):
            if err is not None:
                raise UsageError(f"{e.url}/metrics: {err}; allowed: running {self.spec.name} servers", "endpoints")

    async def poll(self) -> None:
        await asyncio.gather(*(self._poll_one(e) for e in self.endpoints))

    async def _poll_one(self, e: Endpoint) -> None:
        err = await self._scrape(e)
        now = time.monotonic() - self.t0
        if err is None:
            e.failures, e.error = 0, None
            if not e.alive:
                e.alive = True
                e.up_at_s.append(now)
                self.note(f"endpoint {e.url} is back")
            return
        e.failures += 1
        e.error = err
        if e.alive and e.failures >= self.down_after:
            e.alive = False
            e.down_at_s.append(now)
            self.note(f"endpoint {e.url} is down ({err}); managing the rest")

    async def _scrape(self, e: Endpoint) -> str | None:
        """One scrape; the error as a line, or None."""
        try:
            async with self.session.get(f"{e.url}/metrics") as r:
                text = await r.text()
                if r.status != 200:
                    return f"HTTP {r.status}"
            reading = read_engine(self.spec, parse_metrics(text))
        except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError) as x:
            return f"{type(x).__name__}: {x}" if str(x) else type(x).__name__
        except ValueError as x:
            return str(x)
        e.reading = reading
        e.window.add(time.monotonic(), reading)
        return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
