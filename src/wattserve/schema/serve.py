"""`wattserve serve`: workers and their roles, the API, KV transport, power agent and controllers.

Engine fields come from RuntimeEngineConfig (declared once); the budget and policy are the same
ControlConfig as a simulated scenario's, the SLOs the same SloConfig."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from wattserve.control.registry import NEEDS_MODEL, PLANNER_GOVERNOR
from wattserve.governors.registry import GOVERNORS
from wattserve.schema.base import flag
from wattserve.schema.choices import (
    GPUS,
    ROUTERS,
    TRANSPORTS,
    GovernorName,
    GpuName,
    ModelName,
    RouterName,
    TransportName,
)
from wattserve.schema.control import ControlConfig
from wattserve.schema.runtime_engine import RuntimeEngineConfig
from wattserve.schema.slo import SloConfig


class ServeConfig(RuntimeEngineConfig):
    prefill: int = Field(1, ge=0, description="prefill workers (0 when --colocated is given)",
                         json_schema_extra=flag("prefill"))
    decode: int = Field(1, ge=0, description="decode workers (0 when --colocated is given)",
                        json_schema_extra=flag("decode"))
    colocated: int = Field(0, ge=0, description="colocated workers instead of prefill/decode",
                           json_schema_extra=flag("colocated"))
    concurrent: int = Field(0, ge=0, description="concurrent workers instead of prefill/decode: each prefills "
                            "beside its decoding over the same weights and KV cache (a second process on a CPU, "
                            "the cores split between them; a second CUDA stream on a GPU, the SMs split by green "
                            "contexts) by the step governor (RAPID-Serve, --governor rapid-serve)",
                            json_schema_extra=flag("concurrent"))
    layout: Literal["disaggregated", "colocated", "concurrent"] | None = Field(
        None, description="the layout by name: disaggregated (--prefill/--decode workers), colocated or "
        "concurrent (--colocated/--concurrent workers, 1 unless given) [default: disaggregated, or what the "
        "worker counts say]", json_schema_extra=flag("layout"))
    host: str = Field("127.0.0.1", description="address the API listens on", json_schema_extra=flag("host"))
    port: int = Field(8000, ge=0, le=65535, description="API port (0: any free port)", json_schema_extra=flag("port"))
    api_key: str | None = Field(None, description="require 'Authorization: Bearer KEY' on /v1/* "
                                "(default: the WATTSERVE_API_KEY environment variable, which keeps the key out of "
                                "process listings; none: no authentication)", json_schema_extra=flag("api-key"))
    max_prompt_tokens: int = Field(2048, ge=1, description="longest prompt accepted, tokens",
                                   json_schema_extra=flag("max-prompt-tokens"))
    max_tokens: int = Field(2048, ge=1, description="largest max_tokens a request may ask for")
    kv_transport: TransportName = Field("shm", description="how KV travels from prefill to decode workers",
                              json_schema_extra=flag("kv-transport", TRANSPORTS.names()))
    threads: int = Field(1, ge=1, description="torch threads per worker", json_schema_extra=flag("threads-per-worker"))
    router: RouterName = Field("least_loaded", description="request router",
                        json_schema_extra=flag("router", ROUTERS.names()))
    governor: GovernorName = Field("max-clock", description="step governor each worker asks for its clock before every step "
                          "(decode-slack under a planner, which sets its target)",
                          json_schema_extra=flag("governor", GOVERNORS.names()))
    control: ControlConfig = Field(default_factory=ControlConfig)
    gpu: GpuName = Field("h100", description="GPU whose power model stands in for CPU workers",
                     json_schema_extra=flag("gpu", GPUS.names()))
    power_backend: Literal["auto", "nvml", "amdsmi", "modelled"] = Field(
        "auto", description="each worker's power agent for its own device (auto: NVML on CUDA GPUs, modelled "
        "on CPU; amdsmi: AMD GPUs through ROCm's amdsmi)",
        json_schema_extra=flag("power-backend"))
    power_as_model: ModelName = Field("llama-3.1-8b", description="catalog model whose iterations the modelled power "
                                "agent assumes")
    slo: SloConfig = Field(default_factory=SloConfig)
    placement_window_s: float | None = Field(
        None, gt=0, description="every S seconds, recommend BiScale's tier-1 placement and base clocks for the "
        "requests finished in the last S seconds (simulated on --gpu and the modelled catalog model; logged and "
        "on /metrics, not applied: workers keep their TP) [default: off]",
        json_schema_extra=flag("placement-window"))
    step_log: str | None = Field(None, description="folder to log every engine step's batch shape and time into, "
                                 "one CSV per worker in the iteration-table format that `wattserve calibrate "
                                 "--profile` fits [default: off]", json_schema_extra=flag("step-log"))
    launcher: Literal["process", "ray"] = Field(
        "process", description="how workers start: child processes of the server, or Ray actors, one per worker, "
        "on this machine or a Ray cluster (pip install 'wattserve[ray]'; KV then travels over tcp unless "
        "--kv-transport says otherwise)", json_schema_extra=flag("launcher"))
    ray_address: str | None = Field(None, description="the Ray cluster to place workers on (what `ray start --head` "
                                    "printed, or auto); with --launcher ray [default: a local Ray instance]",
                                    json_schema_extra=flag("ray-address"))
    placement: Literal["pack", "spread"] = Field(
        "pack", description="Ray placement of the workers: packed onto as few nodes as fit, or spread over as many "
        "as possible; with --launcher ray", json_schema_extra=flag("placement"))
    restart_workers: bool = Field(False, description="restart a crashed worker (weights reloaded) in its role and "
                                  "put it back in service; without it the server serves on with the rest",
                                  json_schema_extra=flag("restart-workers"))

    @field_validator("api_key")
    @classmethod
    def _key_not_empty(cls, v: str | None) -> str | None:
        """An empty key (an unset shell variable) would silently turn authentication off."""
        if v is not None and not v.strip():
            raise ValueError("an empty key would turn authentication off; allowed: a non-empty key, or none "
                             "(leave --api-key and WATTSERVE_API_KEY unset)")
        return v

    @model_validator(mode="after")
    def _ray_only(self) -> ServeConfig:
        """Ray's options mean nothing to local processes; a worker on another node cannot map the
        server's shared memory, so Ray workers hand KV over tcp unless shm was asked for."""
        if self.launcher != "ray":
            for name in ("ray_address", "placement"):
                if name in self.model_fields_set:
                    raise ValueError(f"{name}: a Ray option; allowed only with --launcher ray")
        elif "kv_transport" not in self.model_fields_set:
            object.__setattr__(self, "kv_transport", "tcp")
        return self

    @model_validator(mode="after")
    def _planner_governs(self) -> ServeConfig:
        """A planner sets its workers' step-governor targets; with no `--governor` named they get
        `PLANNER_GOVERNOR` rather than max-clock, which takes none."""
        if self.control.policy in NEEDS_MODEL and "governor" not in self.model_fields_set:
            object.__setattr__(self, "governor", PLANNER_GOVERNOR)
        return self

    @model_validator(mode="before")
    @classmethod
    def _roles_default(cls, data: Any) -> Any:
        """Without --colocated or --concurrent a server has one prefill and one decode worker; with
        either, none. `--layout NAME` names the layout the counts otherwise imply (RAPID-Serve's issue
        spells the concurrent server `serve --layout concurrent`); counts of another layout beside it
        are refused."""
        if not isinstance(data, dict):
            return data
        layout = data.get("layout")
        if layout in ("colocated", "concurrent"):
            other = [f"--{k}" for k in ("prefill", "decode", "colocated", "concurrent")
                     if k != layout and data.get(k)]
            if other:
                raise ValueError(f"--layout {layout} with {', '.join(other)}; allowed beside it: --{layout} N")
            data = {**data}
            if not data.get(layout):
                data[layout] = 1
        elif layout == "disaggregated":
            other = [f"--{k}" for k in ("colocated", "concurrent") if data.get(k)]
            if other:
                raise ValueError(f"--layout disaggregated with {', '.join(other)}; allowed beside it: "
                                 "--prefill N --decode N")
        if data.get("colocated") or data.get("concurrent"):
            data = {**data}
            data.setdefault("prefill", 0)
            data.setdefault("decode", 0)
        return data

    def engine_fields(self) -> dict[str, Any]:
        """This server's RuntimeEngineConfig fields, to build each worker's EngineArgs from."""
        return self.model_dump(include=set(RuntimeEngineConfig.model_fields))
