"""`wattserve agent` and `wattserve manage`: the node power agent and the external-engine back end,
declared once (issue 13). Checks that need the network (an agent that does not answer, a page that
is not the engine's) run in wattserve.runtime.fleet."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from wattserve.schema.base import Strict, flag
from wattserve.schema.choices import GPUS, GpuName
from wattserve.schema.control import ControlConfig
from wattserve.schema.slo import SloConfig

ENGINES = ("vllm", "sglang")
ROLES = ("colocated", "prefill", "decode")


class AgentConfig(Strict):
    host: str = Field("127.0.0.1", description="address to listen on (anything but loopback needs --token)",
                      json_schema_extra=flag("host"))
    port: int = Field(8790, ge=0, le=65535, description="port (0: any free port, printed at start)",
                      json_schema_extra=flag("port"))
    token: str | None = Field(None, description="require 'Authorization: Bearer TOKEN' from every address but "
                              "loopback (default: the WATTSERVE_AGENT_TOKEN environment variable, which keeps it "
                              "out of process listings)", json_schema_extra=flag("token"))
    power: Literal["nvml", "amdsmi", "modelled"] = Field(
        "nvml", description="how the GPUs are read and set: NVML (NVIDIA), AMD SMI (ROCm), or modelled for a "
        "machine with no GPU (every figure labelled modelled)", json_schema_extra=flag("power"))
    gpus: int = Field(1, ge=1, le=64, description="modelled GPUs (--power modelled only)", json_schema_extra=flag("gpus"))
    gpu: GpuName = Field("h100", description="catalog GPU the modelled GPUs are (--power modelled only)",
                         json_schema_extra=flag("gpu", GPUS.names()))

    @model_validator(mode="after")
    def _modelled_only(self) -> AgentConfig:
        if self.power != "modelled" and "gpus" in self.model_fields_set:
            raise ValueError("gpus: the GPU count is the library's with --power nvml or amdsmi; allowed only with "
                             "--power modelled")
        return self


def _urls(text: str, field: str) -> tuple[str, ...]:
    out = tuple(u.strip().rstrip("/") for u in text.split(",") if u.strip())
    if not out:
        raise ValueError(f"{field}: give at least one URL, comma-separated (http://HOST:PORT)")
    for u in out:
        parts = urlsplit(u)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{field}: {u!r} is not a URL; allowed: http://HOST:PORT or https://HOST:PORT")
    if len(set(out)) != len(out):
        raise ValueError(f"{field}: a URL appears twice")
    return out


class ManageConfig(Strict):
    engine: Literal["vllm", "sglang"] = Field("vllm", description="the engine the endpoints run; their /metrics are "
                                              "read with its metric names", json_schema_extra=flag("engine", ENGINES))
    endpoints: str = Field(description="comma-separated engine servers, each http://HOST:PORT serving /metrics",
                           json_schema_extra=flag("endpoints"))
    agents: str = Field(description="comma-separated `wattserve agent` URLs; their GPUs, in this order, are split "
                        "evenly over the endpoints in theirs", json_schema_extra=flag("agents"))
    roles: str | None = Field(None, description="comma-separated role of each endpoint (colocated, prefill, decode), "
                              "as the fleet was launched (default: all colocated)", json_schema_extra=flag("roles"))
    token: str | None = Field(None, description="the agents' token (default: the WATTSERVE_AGENT_TOKEN environment "
                              "variable)", json_schema_extra=flag("token"))
    poll_s: float = Field(0.5, gt=0, le=10, description="seconds between reads of every /metrics and agent",
                          json_schema_extra=flag("poll"))
    duration_s: float | None = Field(None, gt=0, description="stop after S seconds (default: at SIGTERM or SIGINT)",
                                     json_schema_extra=flag("duration"))
    keep_caps: bool = Field(False, description="leave the caps in place at exit instead of asking the agents to "
                            "restore their defaults", json_schema_extra=flag("keep-caps"))
    out: str | None = Field(None, description="folder for actuations.csv, caps.csv and summary.json, written at exit",
                            json_schema_extra=flag("out"))
    control: ControlConfig = Field(default_factory=ControlConfig)
    slo: SloConfig = Field(default_factory=SloConfig)

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, v: str) -> str:
        _urls(v, "endpoints")
        return v

    @field_validator("agents")
    @classmethod
    def _agents(cls, v: str) -> str:
        _urls(v, "agents")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ManageConfig:
        if self.control.policy is None:
            raise ValueError("control.policy: manage runs a power policy; give --policy NAME and --budget W")
        if self.roles is not None:
            roles = [r.strip() for r in self.roles.split(",")]
            bad = [r for r in roles if r not in ROLES]
            if bad:
                raise ValueError(f"roles: unknown role {bad[0]!r}; allowed: {', '.join(ROLES)}")
            if len(roles) != len(self.endpoint_urls()):
                raise ValueError(f"roles: {len(roles)} roles for {len(self.endpoint_urls())} endpoints; allowed: one "
                                 "per endpoint")
        return self

    def endpoint_urls(self) -> tuple[str, ...]:
        return _urls(self.endpoints, "endpoints")

    def agent_urls(self) -> tuple[str, ...]:
        return _urls(self.agents, "agents")

    def role_list(self) -> tuple[str, ...]:
        if self.roles is None:
            return ("colocated",) * len(self.endpoint_urls())
        return tuple(r.strip() for r in self.roles.split(","))
