"""One runtime engine's model, weights and limits, declared once: the engine's `EngineArgs` and
serve's `ServeConfig` both extend this model, so a limit has one name, one default and one check.

The defaults suit the test-sized CPU engine (64 sequences, 512 tokens per step); the simulator's
engine limits (wattserve.schema.cluster.EngineConfig) model a production vLLM instead."""

from __future__ import annotations

from pydantic import Field

from wattserve.schema.base import Strict, flag


class RuntimeEngineConfig(Strict):
    model: str = Field("tiny", description="model to serve: tiny, tiny-moe, small or a catalog model",
                       json_schema_extra=flag("model"))
    weights: str = Field("dummy", description="'dummy' (seeded random) or a folder of HF safetensors",
                         json_schema_extra=flag("weights"))
    seed: int = Field(0, description="seed of dummy weights and of sampling", json_schema_extra=flag("seed"))
    device: str = Field("cpu", description="cpu, cuda (one GPU per worker) or a torch device",
                        json_schema_extra=flag("device"))
    block_size: int = Field(16, ge=1, description="KV block size, tokens")
    num_blocks: int | None = Field(None, ge=1, description="KV blocks per worker (default: from memory)",
                                   json_schema_extra=flag("num-blocks"))
    max_num_seqs: int = Field(64, ge=1, description="most sequences in one step",
                              json_schema_extra=flag("max-num-seqs"))
    max_batched_tokens: int = Field(512, ge=1, description="most tokens in one step (chunked prefill)",
                                    json_schema_extra=flag("max-batched-tokens"))
    ep: int = Field(1, ge=1, description="expert-parallel shards of each MoE layer: experts grouped per shard, "
                    "tokens dispatched to the shard holding their expert and combined back (the routing shape "
                    "of the simulator's --ep, in one process)", json_schema_extra=flag("ep"))
