"""A serving cluster: GPUs, model, instances and their roles, caps, clocks, router and engine limits.

The simulator reads `ClusterConfig` directly (there is no parallel dataclass). Defaults follow vLLM
where one exists: max_num_seqs 256, block size 16, gpu_memory_utilization 0.9; the colocated token
budget 2048 sits in Sarathi-Serve's 512-2048 range; prefill instances batch up to 8192 tokens
(SplitwiseSim's prompt_max_pending_batch_tokens).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from wattserve.catalog.gpus import GPUS, get_gpu
from wattserve.catalog.models import MODELS, get_model
from wattserve.errors import UsageError
from wattserve.schema.base import Strict


class EngineConfig(Strict):
    max_seqs: int = Field(256, ge=1, le=65536)
    colocated_token_budget: int = Field(2048, ge=16)
    prefill_token_budget: int = Field(8192, ge=16)
    block_size: Literal[8, 16, 32] = 16
    mem_util: float = Field(0.9, gt=0.1, le=1.0)
    governor: str = "max-clock"
    """The step governor each instance asks before every iteration (see wattserve.governors)."""


class ClusterConfig(Strict):
    gpu: str = "h100"
    model: str = "llama-3.1-8b"
    tp: Literal[1, 2, 4, 8] = 1
    prefill: int = Field(4, ge=0)
    decode: int = Field(4, ge=0)
    colocated: int = Field(0, ge=0)
    power_cap_w: float | None = Field(None, gt=0)
    prefill_cap_w: float | None = Field(None, gt=0)
    decode_cap_w: float | None = Field(None, gt=0)
    clock_mhz: int | None = Field(None, gt=0)
    router: Literal["round_robin", "least_loaded"] = "least_loaded"
    gpus_per_node: int = Field(8, ge=1)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    max_run_iters: int | None = Field(None, ge=1)
    """Cap on decode iterations the simulator jumps at once; 1 steps every iteration (to verify the jumps)."""

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, v: str) -> str:
        try:
            get_gpu(v)
        except UsageError:
            raise ValueError(f"unknown GPU {v!r}; allowed: {', '.join(GPUS)}") from None
        return v.lower()

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        try:
            get_model(v)
        except UsageError:
            raise ValueError(f"unknown model {v!r}; allowed: {', '.join(MODELS)}") from None
        return v.lower()

    @model_validator(mode="after")
    def _shape(self) -> ClusterConfig:
        if self.colocated and (self.prefill or self.decode):
            raise ValueError("use either colocated > 0 or prefill/decode > 0, not both "
                             f"(got colocated={self.colocated}, prefill={self.prefill}, decode={self.decode})")
        if not self.colocated and (self.prefill < 1 or self.decode < 1):
            raise ValueError(f"a disaggregated cluster needs prefill >= 1 and decode >= 1 "
                             f"(got prefill={self.prefill}, decode={self.decode}); or set colocated >= 1")
        return self

    @property
    def layout(self) -> str:
        """'colocated' or 'disaggregated': a property of the cluster, not of a power policy."""
        return "colocated" if self.colocated else "disaggregated"

    @property
    def num_instances(self) -> int:
        return self.prefill + self.decode + self.colocated

    @property
    def num_gpus(self) -> int:
        return self.num_instances * self.tp
