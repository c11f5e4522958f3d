"""`wattserve agent`: open every GPU of this node, serve the agent API until SIGTERM or SIGINT, and put
the defaults back on the way out.

As Zeus's zeusd, the agent is the one process on a node that holds the GPUs' management handles;
the cap and clock changes it made are undone when it stops (on a signal, on a normal exit, and at
interpreter exit as a backstop), so a crashed control plane never leaves a node capped. It listens
on loopback unless told otherwise, and refuses to listen anywhere else without a token.
"""

from __future__ import annotations

import asyncio
import atexit
import ipaddress
import signal
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web

from wattserve.errors import UsageError
from wattserve.runtime.power.agent_api import AgentApi
from wattserve.runtime.power.base import GpuPower

POWER_KINDS = ("nvml", "amdsmi", "modelled")
TOKEN_ENV = "WATTSERVE_AGENT_TOKEN"
"""Where the agent (and `manage`) read the token when --token is not given, so it stays out of
process listings."""


def open_node_power(kind: str, gpus: int = 1, gpu: str = "h100", nvml: Any = None,
                    amdsmi: Any = None) -> GpuPower:
    """Every GPU the library sees (nvml, amdsmi), or `gpus` modelled GPUs of catalog kind `gpu`
    drawing idle power (no engine tells a node agent how busy they are): a machine with no GPU can
    still run the control plane end to end, every figure labelled modelled."""
    if kind == "nvml":
        from wattserve.runtime.power.nvml import NvmlGpuPower

        return NvmlGpuPower(nvml=nvml, install_handlers=False)
    if kind == "amdsmi":
        from wattserve.runtime.power.amdsmi import AmdSmiGpuPower

        return AmdSmiGpuPower(amdsmi=amdsmi, install_handlers=False)
    if kind == "modelled":
        from wattserve.runtime.power.modelled import ModelledGpuPower

        return ModelledGpuPower(gpus, gpu, "llama-3.1-8b", lambda i: {})
    raise UsageError(f"unknown value {kind!r}; allowed: {', '.join(POWER_KINDS)}", "power")


def is_loopback_host(host: str) -> bool:
    """Whether every address `host` resolves to is loopback (a name that does not resolve is not)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


def check_exposure(host: str, token: str | None) -> None:
    """An agent reachable from other hosts sets power limits for whoever asks: refuse to listen off
    loopback without a token."""
    if token is not None and not token.strip():
        raise UsageError("an empty token would turn authentication off; allowed: a non-empty token", "token")
    if token is None and not is_loopback_host(host):
        raise UsageError(f"an agent listening on {host} needs a token (--token or {TOKEN_ENV}); allowed without "
                         "one: a loopback host (127.0.0.1, ::1, localhost)", "token")


def describe_nvml(power: GpuPower) -> Callable[[int], dict[str, Any]]:
    """Each GPU's UUID where the library gives one, so an operator can match an agent's index to
    nvidia-smi's."""
    handles = getattr(power, "handles", None)
    nv = getattr(power, "nvml", None)
    if handles is None or nv is None:
        return lambda i: {}

    def describe(i: int) -> dict[str, Any]:
        try:
            u = nv.nvmlDeviceGetUUID(handles[i])
        except Exception:  # noqa: BLE001 - a UUID is a label; a GPU that cannot give one still serves
            return {}
        return {"uuid": u.decode() if isinstance(u, bytes) else str(u)}

    return describe


async def run_agent(power: GpuPower, host: str, port: int, token: str | None,
                    announce: Callable[[str], None] = print) -> None:
    """Serve until SIGTERM or SIGINT, then stop listening and restore the defaults."""
    atexit.register(power.restore)
    runner = web.AppRunner(AgentApi(power, token, describe_nvml(power)).app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as e:
            raise UsageError(f"cannot listen on {host}:{port} ({e.strerror or e})", "port") from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        bound = runner.addresses[0]
        names = ", ".join(power.name(i) for i in range(power.count()))
        shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
        announce(f"wattserve agent: {power.count()} GPU(s) ({names}){' modelled' if power.modelled else ''}, "
                 f"listening on http://{shown}:{bound[1]}")
        await stop.wait()
    finally:
        await runner.cleanup()
        power.restore()
        announce("wattserve agent: defaults restored")
