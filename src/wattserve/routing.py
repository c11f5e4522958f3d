"""Request routing policies, one definition for the simulator's router and the runtime's router.

A router places each new prompt on an instance that prefills (prefill or colocated) and each KV
hand-off on a decode instance. It reads a candidate only through `LoadView`, so "least-loaded"
means the same in `wattserve.sim` and `wattserve.runtime`. Policies, after vLLM's and DistServe's
routers (DistServe, OSDI'24, section 4.3: dispatch to the instance with the shortest queue):
- round_robin: rotate through the candidates, one counter per phase;
- least_loaded: for prompts, fewest prompt tokens still to prefill, ties broken by decode load;
  for hand-offs, fewest sequences (decode load), ties broken by KV blocks in use.
Remaining ties go to the earliest candidate in the order given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from wattserve.registry import Registry


class LoadView(Protocol):
    """What a router may read of a candidate instance. The simulator's instance has these
    attributes itself; the runtime's worker client derives them from the worker's stats and the
    router's own placements."""

    @property
    def pending_prefill_tokens(self) -> int:
        """Prompt tokens placed here and not yet prefilled."""
        ...

    @property
    def decode_load(self) -> int:
        """Sequences decoding here, waiting to join the decode batch, or arriving by hand-off."""
        ...

    @property
    def kv_live_blocks(self) -> int:
        """KV blocks in use now."""
        ...

    @property
    def kv_blocks(self) -> int:
        """KV blocks in all."""
        ...


L = TypeVar("L", bound=LoadView)


class RoutingPolicy(Protocol):
    """Picks one of a non-empty list of candidates. `req` is the request being placed; these
    policies do not read it, a request-aware policy may."""

    name: str

    def pick_prefill(self, candidates: Sequence[L], req: object = None) -> L: ...

    def pick_decode(self, candidates: Sequence[L], req: object = None) -> L: ...


class RoundRobin:
    """One counter per phase, advanced before each pick (the first pick takes candidate 1 % n)."""

    name = "round_robin"

    def __init__(self) -> None:
        self._p = 0
        self._d = 0

    def pick_prefill(self, candidates: Sequence[L], req: object = None) -> L:
        self._p += 1
        return candidates[self._p % len(candidates)]

    def pick_decode(self, candidates: Sequence[L], req: object = None) -> L:
        self._d += 1
        return candidates[self._d % len(candidates)]


class LeastLoaded:
    name = "least_loaded"

    def pick_prefill(self, candidates: Sequence[L], req: object = None) -> L:
        best = candidates[0]
        best_key = (best.pending_prefill_tokens, best.decode_load)
        for c in candidates[1:]:
            key = (c.pending_prefill_tokens, c.decode_load)
            if key < best_key:
                best, best_key = c, key
        return best

    def pick_decode(self, candidates: Sequence[L], req: object = None) -> L:
        """KV in use is read only to break a tie: in the simulator it costs a closed-form solve."""
        best = candidates[0]
        best_load = best.decode_load
        best_kv: int | None = None
        for c in candidates[1:]:
            load = c.decode_load
            if load < best_load:
                best, best_load, best_kv = c, load, None
            elif load == best_load:
                if best_kv is None:
                    best_kv = best.kv_live_blocks
                kv = c.kv_live_blocks
                if kv < best_kv:
                    best, best_kv = c, kv
        return best


ROUTERS: Registry[RoutingPolicy] = Registry("router", {"round_robin": RoundRobin, "least_loaded": LeastLoaded})


def make_policy(name: str) -> RoutingPolicy:
    return ROUTERS.make(name)
