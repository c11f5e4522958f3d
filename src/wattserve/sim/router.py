"""The simulator's request router: the shared routing policies of `wattserve.routing`, applied to
simulated instances. A simulated instance is itself a `LoadView` (it keeps `pending_prefill_tokens`,
`decode_load`, `kv_live_blocks` and `kv_blocks` up to date), so routing costs no adapter objects
and "least-loaded" means what it means in the runtime's router."""

from __future__ import annotations

from wattserve.routing import ROUTERS, LeastLoaded, LoadView, RoundRobin, RoutingPolicy, make_policy

Router = RoutingPolicy
RoundRobinRouter = RoundRobin
LeastLoadedRouter = LeastLoaded


def make_router(name: str) -> RoutingPolicy:
    return make_policy(name)


__all__ = ["ROUTERS", "LeastLoadedRouter", "LoadView", "RoundRobinRouter", "Router", "make_router"]
