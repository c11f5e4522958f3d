"""Engine model configurations: the catalog's LLMs plus small ones for tests and CPU demos."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from wattserve.catalog.models import MODELS, ModelSpec
from wattserve.errors import UsageError
from wattserve.runtime.layers.rope_scaling import RopeScaling

BYTE_VOCAB = 256
BOS_ID = 256
EOS_ID = 257
LLAMA31_ROPE = RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)
"""Llama 3.1's and 3.3's published rope_scaling (their config.json)."""


@dataclass(frozen=True)
class ModelConfig(ModelSpec):
    """The catalog's architecture plus what an engine needs to run it."""

    rope_theta: float = 500000.0
    rms_eps: float = 1e-5
    max_positions: int = 8192
    rope_scaling: RopeScaling | None = None
    ep: int = 1
    """Expert-parallel shards of a mixture-of-experts layer (runtime.layers.mlp.SparseMoE): the
    routing shape of expert parallelism in one process; outputs equal ep = 1's."""

    def __post_init__(self) -> None:
        if self.ep == 1:
            return
        if self.experts == 0:
            raise UsageError(f"{self.ep} needs a mixture-of-experts model, and {self.name} is dense; allowed: 1",
                             "--ep")
        if self.ep < 1 or self.experts % self.ep:
            allowed = ", ".join(str(d) for d in range(1, self.experts + 1) if self.experts % d == 0)
            raise UsageError(f"{self.ep} must divide {self.name}'s {self.experts} experts; allowed: {allowed}", "--ep")

    @staticmethod
    def from_spec(spec: ModelSpec) -> ModelConfig:
        theta = 1_000_000.0 if spec.name.startswith(("Mixtral", "Qwen")) else (
            10_000.0 if spec.name.startswith("Llama-2") else 500_000.0)
        scaling = LLAMA31_ROPE if spec.name.startswith(("Llama-3.1", "Llama-3.3")) else None
        return ModelConfig(**{f.name: getattr(spec, f.name) for f in fields(ModelSpec)}, rope_theta=theta,
                           rope_scaling=scaling)


SMALL_CONFIGS = {
    name: ModelConfig(**{f.name: getattr(MODELS[name], f.name) for f in fields(ModelSpec)}, rope_theta=10000.0,
                      max_positions=4096)
    for name in ("tiny", "tiny-moe", "small")
}
"""Test-sized models (tiny: two layers, GQA 4:2, byte-level vocabulary plus BOS/EOS; tiny-moe: Mixtral-style,
4 experts, top-2) and a small one (about 30M parameters) for CPU speed checks; their shapes live in the
catalog."""


def get_config(name: str) -> ModelConfig:
    key = name.lower()
    if key in SMALL_CONFIGS:
        return SMALL_CONFIGS[key]
    if key in MODELS:
        return ModelConfig.from_spec(MODELS[key])
    raise UsageError(f"model: unknown value {name!r}; allowed: {', '.join([*SMALL_CONFIGS, *MODELS])}")


def config_from_hf(path: Path, base: ModelConfig) -> ModelConfig:
    """Read an HF config.json beside the weights; its sizes win over the catalog's."""
    f = path / "config.json"
    if not f.is_file():
        return base
    c = json.loads(f.read_text())
    hidden = c.get("hidden_size", base.hidden)
    heads = c.get("num_attention_heads", base.heads)
    return ModelConfig(
        name=c.get("_name_or_path", base.name) or base.name, layers=c.get("num_hidden_layers", base.layers),
        hidden=hidden, heads=heads, kv_heads=c.get("num_key_value_heads", heads),
        head_dim=c.get("head_dim", hidden // heads), ffn=c.get("intermediate_size", base.ffn),
        vocab=c.get("vocab_size", base.vocab), experts=c.get("num_local_experts", base.experts),
        experts_per_token=c.get("num_experts_per_tok", base.experts_per_token),
        rope_theta=float(c.get("rope_theta", base.rope_theta)), rms_eps=float(c.get("rms_norm_eps", base.rms_eps)),
        max_positions=min(int(c.get("max_position_embeddings", base.max_positions)), 131072),
        tied_embeddings=bool(c.get("tie_word_embeddings", base.tied_embeddings)),
        rope_scaling=RopeScaling.from_hf(c.get("rope_scaling")), ep=base.ep,
    )
