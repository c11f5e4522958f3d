"""The registries of named things the schema accepts and that are not registered elsewhere: GPUs and
models (the catalog) and the runtime's KV transports, plus the field types that check a name against
its registry.

Transports are registered by "module:attribute" so that listing their names does not import torch.
Routers live in wattserve.routing, controllers in wattserve.control.registry, governors in
wattserve.governors.registry, named scenarios in wattserve.experiments.scenarios.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated

from pydantic import AfterValidator

from wattserve.catalog.gpus import _ALIASES as _GPU_ALIASES
from wattserve.catalog.gpus import GPUS as _GPUS
from wattserve.catalog.gpus import GpuSpec
from wattserve.catalog.models import _ALIASES as _MODEL_ALIASES
from wattserve.catalog.models import MODELS as _MODELS
from wattserve.catalog.models import ModelSpec
from wattserve.control.registry import CONTROLLERS
from wattserve.errors import UsageError
from wattserve.governors.registry import GOVERNORS
from wattserve.registry import Registry
from wattserve.routing import ROUTERS

GPUS: Registry[GpuSpec] = Registry("gpu", {k: (lambda s=s: s) for k, s in _GPUS.items()},
                                   aliases=_GPU_ALIASES, case_sensitive=False)
MODELS: Registry[ModelSpec] = Registry("model", {k: (lambda s=s: s) for k, s in _MODELS.items()},
                                       aliases=_MODEL_ALIASES, case_sensitive=False)
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


GpuName = Annotated[str, AfterValidator(partial(check, GPUS))]
ModelName = Annotated[str, AfterValidator(partial(check, MODELS))]
RouterName = Annotated[str, AfterValidator(partial(check, ROUTERS))]
TransportName = Annotated[str, AfterValidator(partial(check, TRANSPORTS))]
GovernorName = Annotated[str, AfterValidator(partial(check, GOVERNORS))]
PolicyName = Annotated[str, AfterValidator(partial(check, CONTROLLERS))]
"""Field types whose value is resolved to its registry's canonical name (aliases, case) or refused
with the allowed names."""

__all__ = ["CONTROLLERS", "GOVERNORS", "GPUS", "MODELS", "ROUTERS", "TRANSPORTS", "GovernorName", "GpuName",
           "ModelName", "PolicyName", "RouterName", "TransportName", "check"]
