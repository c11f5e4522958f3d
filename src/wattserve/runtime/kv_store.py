"""KV waiting to be pulled: the prefill side of the `tcp` hand-off.

A worker that exports KV keeps the bytes here, keyed, and serves them on its own TCP port; the
decode worker that receives the handle (through the router, which never carries KV bytes) connects
and pulls them, once. This is the pull model of disaggregated serving (DistServe, Mooncake: the
decode instance fetches the KV it was assigned). The server runs on its own thread, so a pull is
answered while the owner's engine is in the middle of a step, and two workers pulling from each
other (a role change migrating both ways) cannot wait on each other's event loops. KV nobody
pulled (the request was aborted in transit) is dropped after `ttl_s`.

Protocol: the client sends one JSON line {"key": K}; the server answers an 8-byte big-endian
length and the bytes, or length 2**64-1 when the key is unknown or already pulled.
"""

from __future__ import annotations

import itertools
import json
import socket
import socketserver
import struct
import threading
import time
from typing import Any

from wattserve.runtime.address import advertised

MISSING = 2**64 - 1
_LEN = struct.Struct(">Q")
PULL_TIMEOUT_S = 30.0


class KvStore:
    def __init__(self, host: str = "127.0.0.1", advertise: str | None = None, ttl_s: float = 120.0) -> None:
        self.ttl_s = ttl_s
        self._items: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()
        self._keys = itertools.count()
        store = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    key = json.loads(self.rfile.readline())["key"]
                except (ValueError, KeyError, TypeError):
                    return
                data = store.take(str(key))
                if data is None:
                    self.wfile.write(_LEN.pack(MISSING))
                else:
                    self.wfile.write(_LEN.pack(len(data)) + data)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((host, 0), Handler)
        self.host = advertise or advertised(host)
        """The address peers pull from: the bound one, or this machine's name for a wildcard bind."""
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="kv-store", daemon=True)
        self._thread.start()

    def put(self, data: bytes) -> str:
        now = time.monotonic()
        key = str(next(self._keys))
        with self._lock:
            for k in [k for k, (t, _) in self._items.items() if now - t > self.ttl_s]:
                del self._items[k]
            self._items[key] = (now, data)
        return key

    def take(self, key: str) -> bytes | None:
        with self._lock:
            item = self._items.pop(key, None)
        return None if item is None else item[1]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def pull(handle: dict[str, Any], timeout_s: float = PULL_TIMEOUT_S) -> bytes:
    """The bytes behind a handle from the store that holds them (once: a second pull finds nothing)."""
    with socket.create_connection((handle["host"], int(handle["port"])), timeout=timeout_s) as sock:
        sock.sendall(json.dumps({"key": handle["key"]}).encode() + b"\n")
        f = sock.makefile("rb")
        head = f.read(_LEN.size)
        if len(head) != _LEN.size:
            raise ConnectionError(f"KV store {handle['host']}:{handle['port']} closed the connection")
        (n,) = _LEN.unpack(head)
        if n == MISSING:
            raise KeyError(f"KV {handle['key']} is not at {handle['host']}:{handle['port']} (pulled, dropped "
                           "or expired)")
        data = f.read(n)
        if len(data) != n:
            raise ConnectionError(f"KV store {handle['host']}:{handle['port']} sent {len(data)} of {n} bytes")
        return data
