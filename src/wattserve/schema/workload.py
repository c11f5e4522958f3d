"""A workload: a trace file (cut, rescaled, repeated) or synthetic arrivals and lengths.

The default is shaped like the Azure 2023 conversation trace (see wattserve.workload.synthetic)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from wattserve.schema.base import Strict, flag
from wattserve.workload.synthetic import AZURE_CONV, LengthDist


class LengthConfig(Strict):
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


def _quantiles(q: LengthDist) -> LengthConfig:
    return LengthConfig(kind="quantiles", values=list(q.values), percents=list(q.percents))


MAX_REQUESTS = 20_000_000
"""The most requests one run may simulate. The simulator keeps a record of every request (about
0.5-1 KB with its arrays and objects), so this bounds a run at roughly 10-20 GB; beyond it numpy would
fail deep inside generation (asking for terabytes) instead of naming the field at fault."""


class WorkloadConfig(Strict):
    trace: str | None = Field(None, description="Azure CSV or Mooncake JSONL trace file",
                              json_schema_extra=flag("trace"))
    trace_format: Literal["azure", "mooncake"] | None = Field(
        None, description="trace file format (default: from the extension)", json_schema_extra=flag("trace-format"))
    arrival: Literal["poisson", "gamma"] = Field(AZURE_CONV.arrival,  # type: ignore[assignment]
                                                 description="synthetic arrival process")
    rate: float | None = Field(None, gt=0, description=f"request rate, req/s (a trace is rescaled to it; "
                               f"synthetic default {AZURE_CONV.rate:g})", json_schema_extra=flag("rate"))
    burstiness: float = Field(AZURE_CONV.burstiness, gt=0, description="gamma arrivals' shape (1 is Poisson)")
    prompt: LengthConfig = Field(default_factory=lambda: _quantiles(AZURE_CONV.prompt))
    output: LengthConfig = Field(default_factory=lambda: _quantiles(AZURE_CONV.output))
    duration_s: float | None = Field(None, gt=0, description=f"seconds of workload (a trace is cut to it; "
                                     f"synthetic default {AZURE_CONV.duration_s:g})",
                                     json_schema_extra=flag("duration"))
    num_requests: int | None = Field(None, ge=1, description="number of requests",
                                     json_schema_extra=flag("num-requests"))
    window_start_s: float = Field(0.0, ge=0, description="where in the trace the window starts, s")
    repeat: int = Field(1, ge=1, le=1000, description="play the workload N times end to end",
                        json_schema_extra=flag("repeat"))

    @model_validator(mode="after")
    def _trace_lengths(self) -> WorkloadConfig:
        if self.trace is None and "trace" in (self.prompt.kind, self.output.kind):
            raise ValueError("length kind 'trace' needs workload.trace")
        return self

    def expected_requests(self) -> float | None:
        """How many requests the synthetic arrivals will hold (None for a trace, whose file decides)."""
        if self.trace is not None and "trace" not in (self.prompt.kind, self.output.kind):
            return None
        if self.num_requests is not None:
            return float(self.num_requests) * self.repeat
        return (self.rate or AZURE_CONV.rate) * (self.duration_s or float(AZURE_CONV.duration_s or 0)) * self.repeat

    @model_validator(mode="after")
    def _fits_memory(self) -> WorkloadConfig:
        n = self.expected_requests()
        if n is None or n <= MAX_REQUESTS:
            return self
        if self.num_requests is not None:
            raise ValueError(f"workload.num_requests: {self.num_requests:,} x repeat {self.repeat} requests is more "
                             f"than the {MAX_REQUESTS:,} a run can hold in memory")
        field = "workload.rate" if self.rate is not None or self.duration_s is None else "workload.duration_s"
        raise ValueError(f"{field}: about {n:,.0f} requests (rate "
                         f"{self.rate or AZURE_CONV.rate:g}/s for {self.duration_s or AZURE_CONV.duration_s:g} s, "
                         f"x repeat {self.repeat}) is more than the {MAX_REQUESTS:,} a run can hold in memory; "
                         "lower the rate or the duration")
