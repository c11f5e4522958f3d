"""What an instance needs from the cluster around it, and nothing more.

Vidur's and nano-vllm's engines hand work back to their owner through a narrow interface rather
than holding it; this Protocol is that interface, so an instance can be driven (and tested) by any
host, and the cluster's other members stay out of its reach.
"""

from __future__ import annotations

from typing import Protocol

from wattserve.sim.request import SimRequest


class Host(Protocol):
    def route(self, req: SimRequest) -> None:
        """Place a prompt on an instance that prefills (a new arrival, or one handed back)."""
        ...

    def hand_off(self, req: SimRequest, src: object) -> None:
        """The prompt's KV is ready on `src`: place the request on a decode instance."""
        ...

    def transfer(self, src: object, dst: object, nbytes: float) -> float:
        """Move KV from one instance to another over their link; returns when it lands."""
        ...

    def complete(self, req: SimRequest, t: float) -> None: ...

    def fail(self, req: SimRequest, reason: str) -> None: ...

    def role_changed(self, inst: object) -> None:
        """An instance finished switching roles: re-read which instances serve each phase."""
        ...
