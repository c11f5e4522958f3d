"""KV hand-off links: first-come first-served servers with latency and bandwidth.

A transfer occupies its link for bytes / bandwidth; transfers queued behind it wait, which is how
concurrent hand-offs from one prefill instance contend (DistServe, Splitwise). Defaults: NVLink4 at
450 GB/s per direction per GPU inside a node; 400 Gb/s InfiniBand (50 GB/s) per GPU across nodes.
"""

from __future__ import annotations


class Link:
    __slots__ = ("name", "bytes_per_s", "latency_s", "busy_until", "bytes_moved", "transfers", "busy_s")

    def __init__(self, name: str, bytes_per_s: float, latency_s: float) -> None:
        self.name = name
        self.bytes_per_s = bytes_per_s
        self.latency_s = latency_s
        self.busy_until = 0.0
        self.bytes_moved = 0.0
        self.transfers = 0
        self.busy_s = 0.0

    def submit(self, now: float, nbytes: float) -> float:
        """Queue a transfer; returns the time its last byte lands."""
        start = now if now > self.busy_until else self.busy_until
        occupy = nbytes / self.bytes_per_s
        self.busy_until = start + occupy
        self.bytes_moved += nbytes
        self.transfers += 1
        self.busy_s += occupy
        return self.busy_until + self.latency_s
