"""EngineArgs: what an engine worker is built from, importable without torch so that the router
(which only validates and forwards it) starts without paying for a torch import."""

from __future__ import annotations

from pydantic import ConfigDict

from wattserve.schema.runtime_engine import RuntimeEngineConfig


class EngineArgs(RuntimeEngineConfig):
    """The model, weights and limits of wattserve.schema.runtime_engine (declared there once, shared
    with serve's flags); frozen, as a worker's spec is.

    `eos_id` overrides the stop ids the engine otherwise takes from the model's folder
    (`tokenizer.stop_ids_for`). `dtype` and `kv_cache_dtype` ("auto": float32 on CPU, bfloat16 on
    CUDA; the KV cache follows the weights) exist so tests can run a bf16 KV cache on CPU."""

    model_config = ConfigDict(frozen=True)
    eos_id: int | None = None
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    enforce_eager: bool = False
    """No CUDA graphs for decode (they are captured only on CUDA, for dense models)."""
