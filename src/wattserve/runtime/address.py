"""Where other processes reach a socket this one binds."""

from __future__ import annotations

import socket

WILDCARDS = ("0.0.0.0", "::", "")


def advertised(host: str) -> str:
    """The address peers connect to for a socket bound to `host`: itself, or this machine's name for
    a wildcard bind (which listens on every interface but is no address to dial)."""
    return socket.gethostname() if host in WILDCARDS else host
