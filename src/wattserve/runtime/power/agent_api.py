"""The node power agent's HTTP API: one aiohttp application over a GpuPower that owns a node's GPUs.

Modelled on Zeus's per-node daemon (zeusd, https://ml.energy/zeus/getting_started/#zeusd): the
process that may set power limits and clocks is one small server, and every client (our control
plane, an operator's script) asks it over HTTP instead of holding NVML handles itself. The answers
are the same dictionaries a worker sends its router (`ops.power_stats`, `ops.power_op`), so the
runtime's workers and this agent share one implementation of every operation and its read-back.

Routes (JSON bodies):

  GET    /health                          liveness, GPU count (no token needed)
  GET    /v1/gpus                         every GPU: name, cap range and cap, clock table, readings
  GET    /v1/gpus/{i}                     one GPU
  POST   /v1/gpus/{i}/power_cap           {"watts": W}: set, read back (event with cap_w)
  POST   /v1/gpus/{i}/locked_clock        {"mhz": M}: lock the SM clock, read back ({"mhz": null} unlocks)
  DELETE /v1/gpus/{i}/locked_clock        unlock
  POST   /v1/restore                      default caps, clocks unlocked, on every GPU this agent touched

Authentication: a request from a loopback address is served as it is; any other needs
`Authorization: Bearer TOKEN` (compared in constant time), and the agent refuses to listen off
loopback without a token (`daemon.check_exposure`). Failures use the OpenAI error shape
(`{"error": {"message", "type", "param", "code"}}`) with the typed power error's kind as `type`, and a
refused op also carries the device's read-back under `readback`, so a client never has to guess
what the GPU holds after a failure.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from wattserve.runtime.power.base import GpuPower
from wattserve.runtime.power.ops import power_op, power_stats

STATUS_OF_KIND = {"range": 400, "permission": 403, "not_found": 404, "not_supported": 501, "lost": 503,
                  "init": 503, "error": 500}
"""HTTP status per typed power error (base.py's kinds)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(remote: str | None) -> bool:
    """Whether a peer address is this host's loopback (127.0.0.0/8, ::1, an IPv4-mapped 127.x).
    An address aiohttp cannot give (None) is not trusted."""
    if not remote:
        return False
    try:
        addr = ipaddress.ip_address(remote.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))


def error_response(status: int, message: str, kind: str, param: str | None = None,
                   readback: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    if readback is not None:
        body["readback"] = readback
    return web.json_response(body, status=status)


def authorized(token: str | None, remote: str | None, header: str | None) -> bool:
    """Loopback peers pass; others need the bearer token (none configured: nobody else passes)."""
    if is_loopback(remote):
        return True
    if token is None or not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header.removeprefix("Bearer ").strip().encode(), token.encode())


class AgentApi:
    """The handlers over one GpuPower. `describe` adds what the power object cannot say about a
    GPU (its UUID) to each listing."""

    def __init__(self, power: GpuPower, token: str | None = None,
                 describe: Callable[[int], dict[str, Any]] | None = None) -> None:
        self.power = power
        self.token = token
        self.describe = describe or (lambda i: {})

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth], client_max_size=64 * 1024)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/gpus", self.gpus)
        app.router.add_get("/v1/gpus/{i}", self.gpu)
        app.router.add_post("/v1/gpus/{i}/power_cap", self.set_cap)
        app.router.add_post("/v1/gpus/{i}/locked_clock", self.lock_clock)
        app.router.add_delete("/v1/gpus/{i}/locked_clock", self.unlock_clock)
        app.router.add_post("/v1/restore", self.restore_all)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/health" and not authorized(self.token, request.remote,
                                                        request.headers.get("Authorization")):
            return error_response(401, "this agent needs 'Authorization: Bearer TOKEN' from any address but "
                                  "loopback", "authentication_error")
        try:
            return await handler(request)
        except web.HTTPException as e:
            return error_response(e.status, e.reason, "invalid_request_error")

    def _listing(self, i: int) -> dict[str, Any]:
        return {"index": i, **self.describe(i), **power_stats(self.power, gpu=i)}

    def _index(self, request: web.Request) -> int | web.Response:
        raw = request.match_info["i"]
        n = self.power.count()
        if not raw.isdigit() or int(raw) >= n:
            return error_response(404, f"gpu: {raw!r} does not exist; allowed: 0..{n - 1}", "not_found", "gpu")
        return int(raw)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "gpus": self.power.count(), "modelled": bool(self.power.modelled)})

    async def gpus(self, request: web.Request) -> web.Response:
        return web.json_response({"gpus": [self._listing(i) for i in range(self.power.count())],
                                  "modelled": bool(self.power.modelled)})

    async def gpu(self, request: web.Request) -> web.Response:
        i = self._index(request)
        return i if isinstance(i, web.Response) else web.json_response(self._listing(i))

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError as e:
            return error_response(400, f"body: not JSON ({e.msg})", "invalid_request_error", "body")
        if not isinstance(body, dict):
            return error_response(400, "body: allowed: a JSON object", "invalid_request_error", "body")
        return body

    def _op(self, i: int, header: dict[str, Any], param: str | None) -> web.Response:
        ev = power_op(self.power, header, gpu=i)
        if ev["ok"]:
            return web.json_response(ev)
        kind = str(ev.get("error_kind") or "error")
        return error_response(STATUS_OF_KIND.get(kind, 500), str(ev.get("error")), kind, param, readback=ev)

    async def set_cap(self, request: web.Request) -> web.Response:
        i = self._index(request)
        body = await self._body(request)
        if isinstance(i, web.Response) or isinstance(body, web.Response):
            return i if isinstance(i, web.Response) else body  # type: ignore[return-value]
        watts = body.get("watts")
        if isinstance(watts, bool) or not isinstance(watts, (int, float)) or not math.isfinite(watts):
            lo, hi = self.power.cap_range_w(i)
            return error_response(400, f"watts: {watts!r} is not a number; allowed: {lo:g} to {hi:g} W",
                                  "invalid_request_error", "watts")
        return self._op(i, {"op": "set_cap", "watts": float(watts), "seq": body.get("seq")}, "watts")

    async def lock_clock(self, request: web.Request) -> web.Response:
        i = self._index(request)
        body = await self._body(request)
        if isinstance(i, web.Response) or isinstance(body, web.Response):
            return i if isinstance(i, web.Response) else body  # type: ignore[return-value]
        mhz = body.get("mhz")
        if mhz is not None and (isinstance(mhz, bool) or not isinstance(mhz, int)):
            return error_response(400, f"mhz: {mhz!r} is not a whole number of MHz; allowed: a clock from GET "
                                  f"/v1/gpus/{i} (supported_clocks_mhz), or DELETE to unlock",
                                  "invalid_request_error", "mhz")
        return self._op(i, {"op": "lock_clock", "mhz": mhz, "seq": body.get("seq")}, "mhz")

    async def unlock_clock(self, request: web.Request) -> web.Response:
        i = self._index(request)
        if isinstance(i, web.Response):
            return i
        return self._op(i, {"op": "lock_clock", "mhz": None}, None)

    async def restore_all(self, request: web.Request) -> web.Response:
        return self._op(0, {"op": "restore"}, None)
