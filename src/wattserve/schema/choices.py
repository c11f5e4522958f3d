"""The registries of named things the schema accepts and that are not registered elsewhere: GPUs and
models (the catalog), the simulator's routers and the runtime's KV transports.

Routers and transports are registered by "module:attribute" so that listing their names imports
neither the simulator nor torch. Controllers live in wattserve.control.registry, governors in
wattserve.governors.registry, named scenarios in wattserve.experiments.scenarios.
"""

from __future__ import annotations

from wattserve.catalog.gpus import _ALIASES as _GPU_ALIASES
from wattserve.catalog.gpus import GPUS as _GPUS
from wattserve.catalog.gpus import GpuSpec
from wattserve.catalog.models import _ALIASES as _MODEL_ALIASES
from wattserve.catalog.models import MODELS as _MODELS
from wattserve.catalog.models import ModelSpec
from wattserve.errors import UsageError
from wattserve.registry import Registry

GPUS: Registry[GpuSpec] = Registry("gpu", {k: (lambda s=s: s) for k, s in _GPUS.items()},
                                   aliases=_GPU_ALIASES, case_sensitive=False)
MODELS: Registry[ModelSpec] = Registry("model", {k: (lambda s=s: s) for k, s in _MODELS.items()},
                                       aliases=_MODEL_ALIASES, case_sensitive=False)
ROUTERS: Registry = Registry("router", {
    "round_robin": "wattserve.sim.router:RoundRobinRouter",
    "least_loaded": "wattserve.sim.router:LeastLoadedRouter",
})
TRANSPORTS: Registry = Registry("kv_transport", {
    "shm": "wattserve.runtime.transport:ShmTransport",
    "tcp": "wattserve.runtime.transport:TcpTransport",
})


def check(registry: Registry, name: str) -> str:
    """The canonical name, or a ValueError that pydantic reports under the field's own path."""
    try:
        return registry.resolve(name)
    except UsageError:
        raise ValueError(f"unknown {registry.field} {name!r}; allowed: {', '.join(registry.names())}") from None
