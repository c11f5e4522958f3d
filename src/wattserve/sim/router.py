"""Request routing across instances: round-robin and least-loaded, as in vLLM's and DistServe's
routers. New prompts go to an instance that prefills (prefill or colocated); hand-offs go to a decode
instance. Least-loaded means fewest queued prefill tokens for prompts, and fewest sequences (running,
waiting to join, or arriving) for hand-offs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from wattserve.errors import unknown
from wattserve.sim.instance import Instance
from wattserve.sim.request import SimRequest

ROUTERS = ("round_robin", "least_loaded")


class Router(Protocol):
    def pick_prefill(self, candidates: Sequence[Instance], req: SimRequest) -> Instance: ...

    def pick_decode(self, candidates: Sequence[Instance], req: SimRequest) -> Instance: ...


class RoundRobinRouter:
    def __init__(self) -> None:
        self._p = 0
        self._d = 0

    def pick_prefill(self, candidates: Sequence[Instance], req: SimRequest) -> Instance:
        self._p += 1
        return candidates[self._p % len(candidates)]

    def pick_decode(self, candidates: Sequence[Instance], req: SimRequest) -> Instance:
        self._d += 1
        return candidates[self._d % len(candidates)]


class LeastLoadedRouter:
    def pick_prefill(self, candidates: Sequence[Instance], req: SimRequest) -> Instance:
        best = candidates[0]
        best_key = (best.pending_prefill_tokens, best.decode_load)
        for inst in candidates[1:]:
            key = (inst.pending_prefill_tokens, inst.decode_load)
            if key < best_key:
                best, best_key = inst, key
        return best

    def pick_decode(self, candidates: Sequence[Instance], req: SimRequest) -> Instance:
        low = min(inst.decode_load for inst in candidates)
        tied = [inst for inst in candidates if inst.decode_load == low]
        if len(tied) == 1:
            return tied[0]
        return min(tied, key=lambda inst: inst.kv_live_blocks)


def make_router(name: str) -> Router:
    if name == "round_robin":
        return RoundRobinRouter()
    if name == "least_loaded":
        return LeastLoadedRouter()
    raise unknown("router", name, ROUTERS)
