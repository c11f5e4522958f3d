"""Scenario configuration: one validated document from which a run can be repeated exactly.

`wattserve simulate --config FILE.yaml` reads it; CLI flags override single fields; the resolved
document is written back as DIR/config.yaml. Errors name the field and the allowed values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from wattserve.errors import UsageError
from wattserve.schema.base import Strict as _Strict
from wattserve.schema.cluster import ClusterConfig
from wattserve.workload.synthetic import AZURE_CONV, LengthDist, SyntheticSpec, generate
from wattserve.workload.traces import load_trace
from wattserve.workload.workload import Workload


class LengthConfig(_Strict):
    """fixed: value; uniform: low..high; lognormal: mu, sigma (of ln tokens), clipped to low..high;
    trace: resampled from the lengths of the workload's trace file (prompt or output column);
    quantiles: `values` at `percents` (0..100, increasing), sampled by inverse CDF."""

    kind: Literal["fixed", "uniform", "lognormal", "trace", "quantiles"]
    value: int | None = Field(None, ge=1)
    low: int = Field(1, ge=1)
    high: int = Field(1_000_000, ge=1)
    mu: float | None = None
    sigma: float | None = Field(None, ge=0)
    values: list[int] | None = None
    percents: list[float] | None = None

    @model_validator(mode="after")
    def _params(self) -> LengthConfig:
        if self.kind == "quantiles":
            v, p = self.values or [], self.percents or []
            if len(v) < 2 or len(v) != len(p):
                raise ValueError("kind 'quantiles' needs values and percents of equal length (>= 2)")
            if p[0] != 0 or p[-1] != 100 or any(b <= a for a, b in zip(p, p[1:])):
                raise ValueError("percents must increase strictly from 0 to 100")
            if any(b < a for a, b in zip(v, v[1:])) or v[0] < 1:
                raise ValueError("values must be >= 1 and non-decreasing")
        if self.kind == "fixed" and self.value is None:
            raise ValueError("kind 'fixed' needs value")
        if self.kind == "lognormal" and (self.mu is None or self.sigma is None):
            raise ValueError("kind 'lognormal' needs mu and sigma")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self


_AZ_P, _AZ_O = AZURE_CONV.prompt, AZURE_CONV.output


class WorkloadConfig(_Strict):
    trace: str | None = None
    trace_format: Literal["azure", "mooncake"] | None = None
    arrival: Literal["poisson", "gamma"] = AZURE_CONV.arrival  # type: ignore[assignment]
    rate: float | None = Field(None, gt=0)
    burstiness: float = Field(AZURE_CONV.burstiness, gt=0)
    prompt: LengthConfig = Field(default_factory=lambda: LengthConfig(
        kind="quantiles", values=list(_AZ_P.values), percents=list(_AZ_P.percents)))
    output: LengthConfig = Field(default_factory=lambda: LengthConfig(
        kind="quantiles", values=list(_AZ_O.values), percents=list(_AZ_O.percents)))
    duration_s: float | None = Field(None, gt=0)
    num_requests: int | None = Field(None, ge=1)
    window_start_s: float = Field(0.0, ge=0)
    repeat: int = Field(1, ge=1, le=1000)

    @model_validator(mode="after")
    def _trace_lengths(self) -> WorkloadConfig:
        if self.trace is None and "trace" in (self.prompt.kind, self.output.kind):
            raise ValueError("length kind 'trace' needs workload.trace")
        return self


class SloConfig(_Strict):
    ttft_ms: float | None = Field(1000.0, gt=0)
    tpot_ms: float | None = Field(50.0, gt=0)


class Scenario(_Strict):
    name: str = "default"
    seed: int = 0
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    workload: WorkloadConfig = Field(default_factory=WorkloadConfig)
    slo: SloConfig = Field(default_factory=SloConfig)


def _format_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    msg = err["msg"].removeprefix("Value error, ")
    extra = f" (got {err['input']!r})" if err.get("type") not in ("value_error",) and "input" in err \
        and not isinstance(err["input"], dict) else ""
    more = f" [+{len(e.errors()) - 1} more]" if len(e.errors()) > 1 else ""
    return f"config: {loc or 'scenario'}: {msg}{extra}{more}"


def load_scenario(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Scenario:
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"config: file {str(p)!r} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise UsageError(f"config {p}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UsageError(f"config {p}: expected a mapping with keys cluster, workload, slo, seed, name")
        data = loaded
    for dotted, value in (overrides or {}).items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[parts[-1]] = value
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise UsageError(_format_error(e)) from None


def _length_dist(cfg: LengthConfig, trace_values: Any) -> LengthDist:
    if cfg.kind == "fixed":
        return LengthDist("fixed", value=int(cfg.value or 1))
    if cfg.kind == "uniform":
        return LengthDist("uniform", low=cfg.low, high=cfg.high)
    if cfg.kind == "lognormal":
        return LengthDist("lognormal", mu=float(cfg.mu or 0), sigma=float(cfg.sigma or 0), low=cfg.low, high=cfg.high)
    if cfg.kind == "quantiles":
        return LengthDist("quantiles", values=tuple(cfg.values or ()), percents=tuple(cfg.percents or ()))
    return LengthDist("empirical", values=tuple(int(v) for v in trace_values))


def build_workload(w: WorkloadConfig, seed: int) -> Workload:
    """A trace (cut to its window, rescaled, repeated), or a synthetic workload.

    With a trace and a length kind of 'trace', the trace supplies lengths to resample while
    arrivals are synthetic; otherwise the trace supplies everything."""
    trace = load_trace(w.trace, w.trace_format) if w.trace else None
    resample = trace is not None and "trace" in (w.prompt.kind, w.output.kind)
    if trace is not None and not resample:
        wl = trace
        if w.window_start_s or w.duration_s:
            end = w.window_start_s + w.duration_s if w.duration_s else None
            wl = wl.window(w.window_start_s, end)
        if w.rate:
            wl = wl.rescale(w.rate)
        if w.num_requests:
            wl = wl.head(w.num_requests)
        return wl.repeat(w.repeat)
    prompt_src = trace.prompt_tokens if trace is not None else None
    output_src = trace.output_tokens if trace is not None else None
    spec = SyntheticSpec(
        rate=w.rate or AZURE_CONV.rate,
        prompt=_length_dist(w.prompt, prompt_src),
        output=_length_dist(w.output, output_src),
        arrival=w.arrival,
        burstiness=w.burstiness,
        duration_s=None if w.num_requests else (w.duration_s or AZURE_CONV.duration_s),
        num_requests=w.num_requests,
        name="synthetic" if w.trace else AZURE_CONV.name,
    )
    return generate(spec, seed).repeat(w.repeat)


def scenario_yaml(s: Scenario) -> str:
    return yaml.safe_dump(s.model_dump(mode="json"), sort_keys=False)
