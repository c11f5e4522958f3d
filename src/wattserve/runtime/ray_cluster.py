"""Starting or joining Ray, once, for every part that runs on it (compare's tasks, serve's worker
actors): a local instance sized for the work, or a running cluster by address, refused in one line
when it cannot be reached (ray.init itself retries an unreachable address for minutes)."""

from __future__ import annotations

import socket
from typing import Any

from wattserve.errors import UsageError

CONNECT_TIMEOUT_S = 5.0


def _reachable(address: str) -> str | None:
    """Why a `host:port` GCS address cannot be reached, or None (other forms are left to Ray)."""
    if address == "auto" or "://" in address:
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return "not host:port"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as e:
        return e.strerror or str(e)


def start_ray(address: str | None, num_cpus: int | None, field: str) -> tuple[Any, bool]:
    """Ray, initialised: `address` joins a cluster ("auto", host:port, ray://...); None starts a local
    instance with `num_cpus` CPUs. Returns the module and whether this call started it (the caller
    shuts down only what it started). Refusals name `field`."""
    try:
        import ray
    except ImportError:
        raise UsageError("Ray is not installed; allowed: pip install 'wattserve[ray]'", field) from None
    if ray.is_initialized():
        return ray, False
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address is None:
        kw["num_cpus"] = num_cpus
    else:
        why = _reachable(address)
        if why is not None:
            raise UsageError(f"cannot reach the Ray cluster at {address!r} ({why}); allowed: the address `ray start "
                             "--head` printed, or auto", field)
    try:
        ray.init(address=address, **kw)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UsageError(f"cannot join the Ray cluster at {address!r} ({e}); allowed: the address `ray start "
                         "--head` printed, or auto", field) from None
    return ray, True
