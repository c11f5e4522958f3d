"""`wattserve validate`: the simulator against our own runtime, declared once (issue 12, fidelity).

Profile the runtime's engine step, fit a perf profile to it, then replay the same requests on the
real runtime (a server, its workers, the load generator) and in the simulator with that profile, per
layout and rate, and report the error of each metric. Checks that need the filesystem or the runtime
(the output folder, the trace, a torch install) run in wattserve.experiments.validate."""

from __future__ import annotations

from pydantic import Field, field_validator

from wattserve.schema.base import Strict, flag

LAYOUTS = ("1p1d", "colocated")
MODELS = ("tiny", "tiny-moe", "small")
LOAD_FRACTIONS = (0.3, 0.5, 0.7)
"""Rates when none are given: these fractions of each layout's capacity, measured on the runtime by
a profiling burst (every request at once), meant to sit below saturation, as the fidelity issue asks;
validate.json's `saturation` checks it per rate (whether the runtime kept up with the requests'
realized arrival rate)."""


PROFILE_LOADS = (0.2, 0.5, 0.8)
"""The profiling runs after the burst, as fractions of the capacity the burst measured: a light load
(where the request overhead is read) up to one above the highest measured rate, so that the serving
profile is fitted over the batches the measured runs visit; the burst only measures capacity."""


def _csv(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


class ValidateConfig(Strict):
    model: str = Field("tiny", description="runtime model to validate on", json_schema_extra=flag("model", MODELS))
    layouts: str = Field(",".join(LAYOUTS), description="comma-separated layouts: 1p1d (one prefill and one decode "
                         "worker, KV handed off) and colocated (one worker)", json_schema_extra=flag("layouts", LAYOUTS))
    rates: str | None = Field(None, description="comma-separated request rates, req/s, each > 0 (default: 0.3, "
                              "0.5 and 0.7 of each layout's capacity, measured by a profiling burst)",
                              json_schema_extra=flag("rates"))
    profile_loads: str = Field(",".join(str(f) for f in PROFILE_LOADS), description="the profiling runs' loads "
                               "(step logs on, fitted) after a burst that measures each layout's capacity: comma-separated "
                               "fractions of that capacity (with --rates: of the highest rate, and no burst)", json_schema_extra=flag("profile-loads"))
    requests: int = Field(200, ge=10, le=100_000, description="requests per run", json_schema_extra=flag("requests"))
    repeats: int = Field(2, ge=1, le=20, description="runtime runs per (layout, rate): the CPU is noisy, so the "
                         "spread is reported", json_schema_extra=flag("repeats"))
    holdout: float = Field(0.2, ge=0.0, lt=1.0, description="share of the profile's rows held out of the fit",
                           json_schema_extra=flag("holdout"))
    profile_table: str | None = Field(None, description="an iteration table to fit instead of profiling the engine "
                                      "again (from an earlier validate or `wattserve profile --kind iterations`)",
                                      json_schema_extra=flag("profile-table"))
    data: str | None = Field(None, description="shared data folder, for the Azure trace's request lengths "
                             "(default: beside the repository; without it, synthetic lengths)",
                             json_schema_extra=flag("data"))
    seed: int = Field(0, ge=0, description="random seed of arrivals and lengths", json_schema_extra=flag("seed"))
    out: str = Field("runs/validate", description="results folder: validate.json, validate.md, the profile and "
                     "its table, cdf.png", json_schema_extra=flag("out"))

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if v.lower() not in MODELS:
            raise ValueError(f"unknown model {v!r}; allowed: {', '.join(MODELS)}")
        return v.lower()

    @field_validator("layouts")
    @classmethod
    def _layouts(cls, v: str) -> str:
        items = _csv(v)
        bad = [x for x in items if x not in LAYOUTS]
        if bad or not items or len(set(items)) != len(items):
            raise ValueError(f"{v!r} is not allowed; allowed: a comma-separated subset of {', '.join(LAYOUTS)}")
        return v

    @field_validator("profile_loads")
    @classmethod
    def _loads(cls, v: str) -> str:
        try:
            loads = [float(x) for x in _csv(v)]
        except ValueError:
            loads = []
        if not loads or any(not (0 < f <= 1) for f in loads):
            raise ValueError(f"{v!r} is not allowed; allowed: comma-separated fractions in (0, 1], like 0.15,0.3")
        return v

    @field_validator("rates")
    @classmethod
    def _rates(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            rates = [float(x) for x in _csv(v)]
        except ValueError:
            rates = []
        if not rates or any(not (0 < r < float("inf")) for r in rates):
            raise ValueError(f"{v!r} is not allowed; allowed: comma-separated finite rates > 0 req/s, like 5,10,15")
        return v

    @property
    def layout_list(self) -> tuple[str, ...]:
        return _csv(self.layouts)

    @property
    def profile_load_list(self) -> tuple[float, ...]:
        return tuple(sorted(float(x) for x in _csv(self.profile_loads)))

    @property
    def rate_list(self) -> tuple[float, ...] | None:
        return None if self.rates is None else tuple(float(x) for x in _csv(self.rates))
