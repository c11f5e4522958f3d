"""A serving cluster: GPUs, model, instances and their roles, caps, clocks, router and engine limits.

The simulator reads `ClusterConfig` directly (there is no parallel dataclass). Defaults follow vLLM
where one exists: max_num_seqs 256, block size 16, gpu_memory_utilization 0.9; the colocated token
budget 2048 sits in Sarathi-Serve's 512-2048 range; prefill instances batch up to 8192 tokens
(SplitwiseSim's prompt_max_pending_batch_tokens).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from wattserve.errors import UsageError
from wattserve.governors.registry import GOVERNORS
from wattserve.perf.perf_profile import load_profile, shipped
from wattserve.schema.base import Strict, flag
from wattserve.schema.choices import GPUS, MODELS, ROUTERS, GovernorName, GpuName, ModelName, RouterName
from wattserve.seam.roles import WITH_CONCURRENT


class EngineConfig(Strict):
    max_seqs: int = Field(256, ge=1, le=65536, description="most sequences in one batch (vLLM max_num_seqs)")
    colocated_token_budget: int = Field(2048, ge=16, description="tokens per iteration on colocated instances")
    prefill_token_budget: int = Field(8192, ge=16, description="tokens per iteration on prefill instances")
    block_size: Literal[8, 16, 32] = Field(16, description="KV block size, tokens")
    mem_util: float = Field(0.9, gt=0.1, le=1.0, description="share of GPU memory for weights and KV")
    governor: GovernorName = Field("max-clock", description="step governor each instance asks for its clock before "
                          "every iteration (decode-slack under a planner, which sets its target)", json_schema_extra=flag("governor", GOVERNORS.names()))
    """The step governor each instance asks before every iteration (see wattserve.governors)."""



class ClusterConfig(Strict):
    gpu: GpuName = Field("h100", description="GPU kind", json_schema_extra=flag("gpu", GPUS.names()))
    model: ModelName = Field("llama-3.1-8b", description="served model", json_schema_extra=flag("model", MODELS.names()))
    tp: Literal[1, 2, 4, 8] = Field(1, description="tensor-parallel GPUs per instance",
                                    json_schema_extra=flag("tp"))
    ep: int = Field(1, ge=1, description="expert-parallel ranks per instance: 1, or tp to spread a mixture-of-"
                    "experts model's experts whole over the TP group (attention stays tensor-parallel)",
                    json_schema_extra=flag("ep"))
    expert_skew: float | None = Field(None, gt=0, le=1, description="busiest expert's share of routed "
                                      "(token, expert) assignments, from 1/experts (uniform) to 1/top_k; "
                                      "default uniform", json_schema_extra=flag("expert-skew"))
    prefill: int = Field(4, ge=0, description="prefill instances", json_schema_extra=flag("prefill"))
    decode: int = Field(4, ge=0, description="decode instances", json_schema_extra=flag("decode"))
    colocated: int = Field(0, ge=0, description="colocated (hybrid-batching) instances instead of "
                           "prefill/decode: the layout", json_schema_extra=flag("colocated"))
    concurrent: int = Field(0, ge=0, description="concurrent instances instead of prefill/decode: prefill and "
                            "decode run at once on the same GPUs, each on its own stream (RAPID-Serve)",
                            json_schema_extra=flag("concurrent"))
    power_cap_w: float | None = Field(None, gt=0, description="per-GPU power cap, W (default: the GPU's TDP)",
                                      json_schema_extra=flag("power-cap"))
    prefill_cap_w: float | None = Field(None, gt=0, description="per-GPU cap on prefill instances, W",
                                        json_schema_extra=flag("prefill-cap"))
    decode_cap_w: float | None = Field(None, gt=0, description="per-GPU cap on decode instances, W",
                                       json_schema_extra=flag("decode-cap"))
    clock_mhz: int | None = Field(None, gt=0, description="locked SM clock, MHz", json_schema_extra=flag("clock"))
    prefill_tp: Literal[1, 2, 4, 8] | None = Field(None, description="tensor-parallel GPUs per prefill instance "
                                                   "(default: tp)", json_schema_extra=flag("prefill-tp"))
    decode_tp: Literal[1, 2, 4, 8] | None = Field(None, description="tensor-parallel GPUs per decode instance "
                                                  "(default: tp)", json_schema_extra=flag("decode-tp"))
    prefill_clock_mhz: int | None = Field(None, gt=0, description="locked SM clock on prefill instances, MHz",
                                          json_schema_extra=flag("prefill-clock"))
    decode_clock_mhz: int | None = Field(None, gt=0, description="locked SM clock on decode instances, MHz",
                                         json_schema_extra=flag("decode-clock"))
    router: RouterName = Field("least_loaded", description="request router", json_schema_extra=flag("router", ROUTERS.names()))
    gpus_per_node: int = Field(8, ge=1, description="GPUs per node (tensor parallelism stays in one node)")
    engine: EngineConfig = Field(default_factory=EngineConfig)
    perf_profile: str = Field("default", description="latency and power constants: a shipped perf profile or a "
                              "profile JSON file from `wattserve calibrate --profile` (docs/calibration.md)",
                              json_schema_extra=flag("perf-profile", shipped()))
    prefill_perf_profile: str | None = Field(None, description="perf profile of prefill instances (default: "
                                             "--perf-profile), where the prefill side runs another engine or pays "
                                             "for its KV export", json_schema_extra=flag("prefill-perf-profile"))
    decode_perf_profile: str | None = Field(None, description="perf profile of decode instances (default: "
                                            "--perf-profile)", json_schema_extra=flag("decode-perf-profile"))
    max_run_iters: int | None = Field(None, ge=1)
    """Cap on decode iterations the simulator jumps at once; 1 steps every iteration (to verify the jumps)."""

    @field_validator("perf_profile", "prefill_perf_profile", "decode_perf_profile")
    @classmethod
    def _profile(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            load_profile(v)
        except UsageError as e:
            raise ValueError(e.detail) from None
        return v

    @model_validator(mode="after")
    def _shape(self) -> ClusterConfig:
        for name in ("colocated", "concurrent"):
            n = getattr(self, name)
            if n and (self.prefill or self.decode or self.colocated + self.concurrent > n):
                raise ValueError(f"cluster.{name}: use one layout: colocated > 0, concurrent > 0, or "
                                 f"prefill/decode > 0 (got colocated={self.colocated}, concurrent="
                                 f"{self.concurrent}, prefill={self.prefill}, decode={self.decode})")
        if not self.colocated and not self.concurrent and (self.prefill < 1 or self.decode < 1):
            field = "cluster.prefill" if self.prefill < 1 else "cluster.decode"
            raise ValueError(f"{field}: a disaggregated cluster needs prefill >= 1 and decode >= 1 "
                             f"(got prefill={self.prefill}, decode={self.decode}); or set colocated >= 1 "
                             "or concurrent >= 1")
        return self

    @property
    def layout(self) -> str:
        """'colocated', 'concurrent' or 'disaggregated': a property of the cluster, not of a power policy."""
        if self.colocated:
            return "colocated"
        return "concurrent" if self.concurrent else "disaggregated"

    @property
    def num_instances(self) -> int:
        return self.prefill + self.decode + self.colocated + self.concurrent

    def instance_roles(self) -> list[str]:
        """Each instance's role in instance-id order: the simulator builds its instances role by
        role, and a model of the cluster (the planner's) places running requests by that order."""
        return [role for role in WITH_CONCURRENT for _ in range(getattr(self, role))]

    def tp_of(self, role: str) -> int:
        """TP degree of an instance in `role`: DistServe and BiScale place prefill and decode with
        their own parallelism, so a disaggregated cluster may give each phase its own."""
        own = {"prefill": self.prefill_tp, "decode": self.decode_tp}.get(role)
        return self.tp if own is None else own

    def profile_of(self, role: str) -> str:
        """Perf profile of an instance in `role` (its phase's profile, else the cluster's)."""
        own = {"prefill": self.prefill_perf_profile, "decode": self.decode_perf_profile}.get(role)
        return self.perf_profile if own is None else own

    def clock_of(self, role: str) -> int | None:
        """Clock lock of an instance in `role` (its phase's lock, else the cluster's)."""
        own = {"prefill": self.prefill_clock_mhz, "decode": self.decode_clock_mhz}.get(role)
        return self.clock_mhz if own is None else own

    @property
    def num_gpus(self) -> int:
        return (self.prefill * self.tp_of("prefill") + self.decode * self.tp_of("decode")
                + (self.colocated + self.concurrent) * self.tp)
