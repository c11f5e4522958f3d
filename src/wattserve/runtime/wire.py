"""Framing between the router and workers: a JSON header plus an optional binary payload.

Frame: 4-byte header length, 4-byte payload length (big-endian), header (UTF-8 JSON), payload. JSON
rather than pickle so that a worker never executes what arrives on its socket.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

_LEN = struct.Struct(">II")


def encode(header: dict[str, Any], payload: bytes = b"") -> bytes:
    h = json.dumps(header, separators=(",", ":")).encode()
    return _LEN.pack(len(h), len(payload)) + h + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    hl, pl = _LEN.unpack(await reader.readexactly(_LEN.size))
    header = json.loads(await reader.readexactly(hl))
    payload = await reader.readexactly(pl) if pl else b""
    return header, payload
