"""`wattserve profile` and `wattserve fit`: PALS's offline models, declared once.

PALS (Hankendi, Shahout, Yu, Coskun, "PALS: Power-Aware LLM Serving for Mixture-of-Experts Models",
arXiv 2605.21427) chooses the GPU power cap and the batch size together from lightweight offline
models: its released profiling code sweeps power caps (100-400 W in 50 W steps on a 400 W part) x
batch sizes {1, 4, 8, 16, 32, 64} at TP=4 and fits scikit-learn random forests that predict throughput
and power from (model, cap, batch). `ProfileConfig` declares that sweep (on the simulator or on the
runtime's workers), `FitConfig` the fit.

`ProfileConfig(kind="iterations")` declares the other profile (issue 12, fidelity): the latency of one
step of our own engine over a grid of batch shapes, the table perf.iteration_table defines and
`wattserve calibrate --profile` fits. The two kinds share `--model`, `--seed` and `--out`; each
refuses the other's flags rather than ignore them. Checks that need the filesystem or a back end (the
output folder, the profile file, a runtime model name, a CUDA device) run in
wattserve.experiments.profile, .iteration_profile and .fit."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from wattserve.catalog.gpus import GPUS as _GPU_SPECS
from wattserve.schema.base import Strict, flag
from wattserve.schema.choices import GPUS, MODELS, check

TPS = (1, 2, 4, 8)
MAX_POINTS = 100_000
"""More grid points than any profile needs (PALS's grid is 42 per model); a typo such as a 1 W cap
step would otherwise start a run of hours."""


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """'1,4,8' -> (1, 4, 8); a ValueError naming `what` for anything else."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of integers; allowed: {what}") from None
    if len(set(values)) != len(values):
        raise ValueError(f"{text!r} repeats a value; allowed: {what}, each once")
    return values


def parse_caps(text: str) -> tuple[float, ...]:
    """'100:400:50' (from, to inclusive, step) or '100,250,400' -> caps in W, ascending."""
    allowed = "LO:HI:STEP in W (e.g. 100:400:50) or a comma-separated list of W"
    try:
        if ":" in text:
            lo, hi, step = (float(v) for v in text.split(":"))
            if not (0 < lo <= hi and step > 0) or (hi - lo) / step > MAX_POINTS:
                raise ValueError
            n = int((hi - lo) / step + 1e-9)
            values = tuple(round(lo + i * step, 6) for i in range(n + 1))
        else:
            values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not a list of caps; allowed: {allowed}") from None
    if any(not v > 0 or v != v or v == float("inf") for v in values):
        raise ValueError(f"{text!r}: allowed: {allowed}, each a finite number > 0")
    if len(set(values)) != len(values):
        raise ValueError(f"{text!r} repeats a cap; allowed: {allowed}, each once")
    return tuple(sorted(values))


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def parse_sizes(text: str, lo: int, hi: int, optional: bool) -> tuple[int, ...]:
    """'1,4,16' -> (1, 4, 16), ascending, each in [lo, hi]; '' -> () where `optional` (that family of
    rows left out); a ValueError naming the allowed values for anything else."""
    allowed = f"comma-separated integers from {lo} to {hi}{', or empty' if optional else ''}"
    if not text.strip():
        if optional:
            return ()
        raise ValueError(f"{text!r} is empty; allowed: {allowed}")
    values = parse_ints(text, allowed)
    if any(not lo <= v <= hi for v in values):
        raise ValueError(f"{text!r}: allowed: {allowed}")
    return tuple(sorted(values))


OPERATING_POINT_FIELDS = ("gpu", "ep", "caps", "batches", "duration_s", "jobs")
ITERATION_FIELDS = ("device", "threads", "prefill_tokens", "prefill_seqs", "prefill_ctx", "decode_seqs",
                    "decode_ctx", "mixed_tokens", "mixed_seqs", "mixed_ctx", "repeats", "warmup")
MAX_TOKENS = 65_536
"""The largest prompt chunk or context a grid dimension takes: beyond any runtime model's positions,
and a bound on what one typo can ask the engine to allocate."""
MAX_SEQS = 4096
SIZES = {"prefill_tokens": (1, MAX_TOKENS, True), "prefill_seqs": (1, MAX_SEQS, False),
         "prefill_ctx": (0, MAX_TOKENS, False), "decode_seqs": (1, MAX_SEQS, True),
         "decode_ctx": (2, MAX_TOKENS, False), "mixed_tokens": (1, MAX_TOKENS, True),
         "mixed_seqs": (1, MAX_SEQS, False), "mixed_ctx": (2, MAX_TOKENS, False)}
"""Each grid dimension of --kind iterations: (lowest, highest, may be empty). A decode context counts
the token the step computes, and a decode sequence has generated one before it: 2 at least."""


class ProfileConfig(Strict):
    kind: Literal["operating-points", "iterations"] = Field(
        "operating-points", description="what to measure: operating-points (PALS: throughput and power per cap x "
                                        "batch limit) or iterations (the latency of one step of our own engine "
                                        "per batch shape; --backend runtime only)", json_schema_extra=flag("kind"))
    backend: Literal["sim", "runtime"] = Field(
        "sim", description="where to measure: sim (the simulator, seconds) or runtime (CPU engine workers with "
                           "the modelled power agent)", json_schema_extra=flag("backend"))
    gpu: str = Field("a100", description="comma-separated GPU kinds (runtime: the GPU whose power model stands in "
                                         "for the CPU workers)", json_schema_extra=flag("gpu", GPUS.names()))
    model: str = Field("mixtral-8x7b", description="comma-separated models (sim: catalog models; runtime: tiny, "
                                                   "tiny-moe, small; --kind iterations: those, default tiny, or "
                                                   "on --device cuda any catalog model)",
                       json_schema_extra=flag("model"))
    tp: str = Field("4", description="comma-separated tensor-parallel sizes, each 1, 2, 4 or 8 (runtime: 1; --kind "
                                     "iterations: 1, the default there)", json_schema_extra=flag("tp"))
    ep: str = Field("1", description="comma-separated expert-parallel sizes (1 unless the cluster schema has ep)",
                    json_schema_extra=flag("ep"))
    caps: str = Field("100:400:50", description="power caps per GPU, W: LO:HI:STEP or a comma-separated list; "
                                                "each inside every --gpu's cap range",
                      json_schema_extra=flag("caps"))
    batches: str = Field("1,4,8,16,32,64", description="comma-separated batch limits (max_num_seqs), each >= 1",
                         json_schema_extra=flag("batches"))
    duration_s: float = Field(60.0, gt=0, le=86_400, description="seconds measured per point (sim: simulated; "
                                                                  "runtime: wall), the first 20% a warm-up",
                              json_schema_extra=flag("duration"))
    seed: int = Field(0, ge=0, description="seed of the arrivals and lengths (--kind iterations: of the "
                                                  "dummy weights)", json_schema_extra=flag("seed"))
    jobs: int | None = Field(None, ge=1, le=1024, description="simulator points run in parallel (default: the "
                                                              "CPU cores)", json_schema_extra=flag("jobs"))
    device: Literal["cpu", "cuda"] = Field(
        "cpu", description="--kind iterations: where the engine runs (cuda: the first GPU torch sees)",
        json_schema_extra=flag("device"))
    threads: int = Field(1, ge=1, le=1024, description="--kind iterations: torch threads, as serve's "
                                                       "--threads-per-worker (the worker's default is 1)",
                         json_schema_extra=flag("threads"))
    prefill_tokens: str = Field("16,64,256,512", description="--kind iterations: prompt tokens each prefill "
                                                             "sequence computes in the step (empty: no prefill "
                                                             "rows)", json_schema_extra=flag("prefill-tokens"))
    prefill_seqs: str = Field("1,2,4", description="--kind iterations: prefill sequences in one step",
                              json_schema_extra=flag("prefill-seqs"))
    prefill_ctx: str = Field("0,256", description="--kind iterations: tokens each prefill sequence has cached "
                                                  "before the step (0: a whole prompt; more: the last chunk of a "
                                                  "chunked prefill)", json_schema_extra=flag("prefill-ctx"))
    decode_seqs: str = Field("1,4,16,64", description="--kind iterations: decode batch sizes (empty: no decode "
                                                      "rows)", json_schema_extra=flag("decode-seqs"))
    decode_ctx: str = Field("16,128,1024", description="--kind iterations: context of each decode sequence, "
                                                       "tokens, the one it computes included",
                            json_schema_extra=flag("decode-ctx"))
    mixed_tokens: str = Field("64,256", description="--kind iterations: mixed rows, one prompt of this many "
                                                    "tokens (nothing cached) beside a decode batch (empty: no "
                                                    "mixed rows)", json_schema_extra=flag("mixed-tokens"))
    mixed_seqs: str = Field("4,16", description="--kind iterations: the decode batch sizes of mixed rows",
                            json_schema_extra=flag("mixed-seqs"))
    mixed_ctx: str = Field("128", description="--kind iterations: the context of each decode sequence in mixed "
                                              "rows", json_schema_extra=flag("mixed-ctx"))
    repeats: int = Field(5, ge=1, le=1000, description="--kind iterations: timed steps per shape; the row holds "
                                                       "their median", json_schema_extra=flag("repeats"))
    warmup: int = Field(2, ge=0, le=1000, description="--kind iterations: untimed steps per shape before the "
                                                      "timed ones", json_schema_extra=flag("warmup"))
    out: str | None = Field(None, description="the table to write: FILE.csv, or FILE.parquet when pyarrow is "
                                              "installed (required; --kind iterations: FILE.csv)",
                            json_schema_extra=flag("out"))

    @field_validator("gpu")
    @classmethod
    def _gpus(cls, v: str) -> str:
        names = _names(v)
        if not names:
            raise ValueError(f"{v!r} names no GPU; allowed: {', '.join(GPUS.names())}")
        out = [check(GPUS, n) for n in names]
        if len(set(out)) != len(out):
            raise ValueError(f"{v!r} names a GPU twice")
        return ",".join(out)

    @field_validator("model")
    @classmethod
    def _models(cls, v: str) -> str:
        if not _names(v):
            raise ValueError(f"{v!r} names no model; allowed: {', '.join(MODELS.names())}")
        return ",".join(_names(v))

    @field_validator("tp")
    @classmethod
    def _tp(cls, v: str) -> str:
        if any(t not in TPS for t in parse_ints(v, "1, 2, 4 or 8")):
            raise ValueError(f"{v!r}: allowed: each of 1, 2, 4, 8")
        return v

    @field_validator("ep")
    @classmethod
    def _ep(cls, v: str) -> str:
        if any(e < 1 for e in parse_ints(v, "integers >= 1")):
            raise ValueError(f"{v!r}: allowed: integers >= 1")
        return v

    @field_validator("caps")
    @classmethod
    def _caps(cls, v: str) -> str:
        parse_caps(v)
        return v

    @field_validator("batches")
    @classmethod
    def _batches(cls, v: str) -> str:
        if any(b < 1 or b > 65536 for b in parse_ints(v, "integers from 1 to 65536")):
            raise ValueError(f"{v!r}: allowed: integers from 1 to 65536")
        return v

    @field_validator(*SIZES)
    @classmethod
    def _sizes(cls, v: str, info: ValidationInfo) -> str:
        parse_sizes(v, *SIZES[str(info.field_name)])
        return v

    @field_validator("out")
    @classmethod
    def _out(cls, v: str | None) -> str | None:
        if v is not None and not v.lower().endswith((".csv", ".parquet")):
            raise ValueError(f"{v!r}: allowed: a path ending in .csv or .parquet")
        return v

    @model_validator(mode="after")
    def _fits(self) -> ProfileConfig:
        if self.out is None:
            raise ValueError("out: required; allowed: a path ending in .csv or .parquet")
        if self.kind == "iterations":
            return self._iterations()
        given = [f for f in ITERATION_FIELDS if f in self.model_fields_set]
        if given:
            raise ValueError(f"{given[0]}: applies to --kind iterations only; allowed with --kind "
                             f"operating-points: leave it out")
        for g in self.gpus:
            spec = _GPU_SPECS[g]
            bad = [c for c in self.cap_list if not spec.cap_min_w <= c <= spec.cap_max_w]
            if bad:
                raise ValueError(f"caps: {bad[0]:g} W is outside {g}'s cap range; allowed: "
                                 f"{spec.cap_min_w:g} to {spec.cap_max_w:g} W")
        if self.backend == "sim":
            for n in self.model.split(","):
                try:
                    check(MODELS, n)
                except ValueError as e:
                    raise ValueError(f"model: {e}") from None
        if self.backend == "runtime" and (self.tps != (1,) or self.eps != (1,)):
            raise ValueError("tp: the runtime runs one worker per GPU; allowed with --backend runtime: --tp 1 "
                             "--ep 1")
        points = len(self.gpus) * len(self.models) * len(self.tps) * len(self.eps) * len(self.cap_list) \
            * len(self.batch_list)
        if points > MAX_POINTS:
            raise ValueError(f"caps: the grid has {points:,} points; allowed: at most {MAX_POINTS:,}")
        return self

    def _iterations(self) -> ProfileConfig:
        if self.backend != "runtime":
            raise ValueError(f"backend: --kind iterations times our own engine; allowed with --kind iterations: "
                             f"runtime (got {self.backend})")
        given = [f for f in OPERATING_POINT_FIELDS if f in self.model_fields_set]
        if given:
            raise ValueError(f"{given[0]}: applies to --kind operating-points only; allowed with --kind "
                             f"iterations: leave it out")
        if "tp" in self.model_fields_set and self.tps != (1,):
            raise ValueError("tp: the engine runs in one process; allowed with --kind iterations: 1")
        for n in self.models:
            try:
                check(MODELS, n)
            except ValueError as e:
                raise ValueError(f"model: {e}") from None
        if not self.out.lower().endswith(".csv"):
            raise ValueError(f"out: {self.out!r}: --kind iterations writes CSV; allowed: a path ending in .csv")
        n = {name: len(self.sizes(name)) for name in SIZES}
        shapes = n["prefill_tokens"] * n["prefill_seqs"] * n["prefill_ctx"] + n["decode_seqs"] * n["decode_ctx"] \
            + n["mixed_tokens"] * n["mixed_seqs"] * n["mixed_ctx"]
        if shapes == 0:
            raise ValueError("prefill_tokens: the grid has no shape; allowed: at least one of --prefill-tokens, "
                             "--decode-seqs or --mixed-tokens non-empty")
        if shapes * len(self.models) > MAX_POINTS:
            raise ValueError(f"prefill_tokens: the grid has {shapes * len(self.models):,} shapes; allowed: at most "
                             f"{MAX_POINTS:,}")
        return self

    @property
    def iteration_models(self) -> tuple[str, ...]:
        """The models `--kind iterations` times: as given (catalog names), or tiny when none was."""
        if "model" not in self.model_fields_set:
            return ("tiny",)
        return tuple(MODELS.resolve(n) for n in self.model.split(","))

    def sizes(self, name: str) -> tuple[int, ...]:
        """One grid dimension of --kind iterations (a key of SIZES), ascending."""
        return parse_sizes(getattr(self, name), *SIZES[name])

    @property
    def gpus(self) -> tuple[str, ...]:
        return tuple(self.gpu.split(","))

    @property
    def models(self) -> tuple[str, ...]:
        """Catalog names on the simulator (aliases resolved), as given on the runtime."""
        names = tuple(self.model.split(","))
        return tuple(MODELS.resolve(n) for n in names) if self.backend == "sim" else names

    @property
    def tps(self) -> tuple[int, ...]:
        return parse_ints(self.tp, "")

    @property
    def eps(self) -> tuple[int, ...]:
        return parse_ints(self.ep, "")

    @property
    def cap_list(self) -> tuple[float, ...]:
        return parse_caps(self.caps)

    @property
    def batch_list(self) -> tuple[int, ...]:
        return tuple(sorted(parse_ints(self.batches, "")))


class FitConfig(Strict):
    profile: str | None = Field(None, description="the table `wattserve profile` wrote (.csv or .parquet; "
                                                  "required)", json_schema_extra=flag("profile"))
    out: str | None = Field(None, description="the models file to write, JSON (required)",
                            json_schema_extra=flag("out"))
    regressor: Literal["auto", "random-forest", "gradient-boosting"] = Field(
        "auto", description="the regressor whose predictions are written (auto: the lower mean cross-validated "
                            "MAPE over throughput and power)", json_schema_extra=flag("regressor"))
    folds: int = Field(5, ge=2, le=100, description="cross-validation folds (shuffled, seeded)",
                       json_schema_extra=flag("folds"))
    seed: int = Field(0, ge=0, description="seed of the folds and of the regressors",
                      json_schema_extra=flag("seed"))

    @model_validator(mode="after")
    def _given(self) -> FitConfig:
        for name in ("profile", "out"):
            v = getattr(self, name)
            if v is None or not v.strip():
                raise ValueError(f"{name}: required; allowed: a path")
        return self
