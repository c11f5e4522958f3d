"""Hardware and model catalog: the facts the latency and power models are built from."""

from wattserve.catalog.gpus import GPUS, GpuSpec, get_gpu
from wattserve.catalog.models import MODELS, ModelSpec, get_model

__all__ = ["GPUS", "MODELS", "GpuSpec", "ModelSpec", "get_gpu", "get_model"]
