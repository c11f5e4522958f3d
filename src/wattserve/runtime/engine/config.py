"""Engine model configurations: the catalog's LLMs plus small ones for tests and CPU demos."""

from __future__ import annotations

from dataclasses import dataclass, fields

from wattserve.catalog.models import MODELS, ModelSpec
from wattserve.errors import UsageError
from wattserve.runtime.layers.rotary import RopeScaling

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
