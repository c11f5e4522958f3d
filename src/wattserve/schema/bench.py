"""`wattserve bench`: the load generator's settings, with `vllm bench serve`'s flag names.

Declared as a model so that every flag gets its description, default and allowed values in --help
(generated like serve's) and every bad value is refused before a single request is sent. Checks
that need the filesystem or the network (the trace, the result folder, the server) live in
wattserve.loadgen.bench, which runs them before the benchmark starts."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from wattserve.schema.base import Strict, flag

METRICS = ("ttft", "tpot", "itl", "e2el")
GOODPUT_KEYS = ("ttft", "tpot", "e2el")
MAX_PROMPT_TEXT_TOKENS = 100_000_000
"""All prompts are built before the first request is sent; past this many tokens of prompt text in
all (about a gigabyte) a run would exhaust memory instead of measuring the server."""

MAX_REQUEST_TIMEOUT_S = 10_000_000.0
"""As long as the longest run (wattserve.loadgen.bench.MAX_SPAN_S); the default, 600 s, is what HTTP
clients commonly allow (vLLM's bench allows 6 h for the whole request)."""


class BenchConfig(Strict):
    base_url: str = Field("http://127.0.0.1:8000", description="the server, http:// or https://",
                          json_schema_extra=flag("base-url"))
    endpoint: Literal["/v1/completions", "/v1/chat/completions"] = Field(
        "/v1/completions", description="API path the requests go to", json_schema_extra=flag("endpoint"))
    model: str | None = Field(None, description="model name sent with each request (default: the server's)",
                              json_schema_extra=flag("model"))
    num_prompts: int = Field(100, ge=1, le=1_000_000, description="requests to send",
                             json_schema_extra=flag("num-prompts"))
    request_rate: float = Field(float("inf"), gt=0, allow_inf_nan=True,
                                description="requests per second (inf: all at once)",
                                json_schema_extra=flag("request-rate"))
    burstiness: float = Field(1.0, gt=0, description="gamma shape of the arrivals (1: Poisson; lower: burstier)",
                              json_schema_extra=flag("burstiness"))
    max_concurrency: int | None = Field(None, ge=1, description="most requests in flight (default: no limit)",
                                        json_schema_extra=flag("max-concurrency"))
    random_input_len: int = Field(128, ge=1, le=1_000_000,
                                  description="prompt length of each synthetic request, in the server's tokens "
                                              "(as its usage counts them, BOS included), or in words with "
                                              "--tokenizer words",
                                  json_schema_extra=flag("random-input-len"))
    random_output_len: int = Field(64, ge=1, le=1_000_000, description="max_tokens of each synthetic request",
                                   json_schema_extra=flag("random-output-len"))
    trace: str | None = Field(None, description="replay arrivals and lengths from an Azure CSV or Mooncake JSONL "
                                                "trace instead of synthetic requests",
                              json_schema_extra=flag("trace"))
    tokenizer: Literal["server", "words"] = Field(
        "server", description="how prompt lengths (--random-input-len, a trace's) are counted: server: in the "
                              "server's own tokens, sized with its POST /tokenize (vLLM, SGLang, wattserve serve; "
                              "with /v1/chat/completions the whole templated prompt where /tokenize takes messages, as "
                              "vLLM's does, else the message content); "
                              "a server without it gets words and a line on stderr saying so; words: whitespace "
                              "words, for any server; the result's input_len_unit says which",
        json_schema_extra=flag("tokenizer"))
    goodput: list[str] | None = Field(None, description="SLOs as KEY:MS, KEY one of ttft, tpot, e2el and MS >= 0 "
                                                        "(e.g. ttft:1000 tpot:50); goodput counts requests within all",
                                      json_schema_extra=flag("goodput"))
    percentile_metrics: str = Field("ttft,tpot,itl", description="comma-separated metrics to report, from "
                                                                 "ttft, tpot, itl, e2el",
                                    json_schema_extra=flag("percentile-metrics"))
    metric_percentiles: str = Field("99", description="comma-separated percentiles to report, each in (0, 100)",
                                    json_schema_extra=flag("metric-percentiles"))
    ignore_eos: bool = Field(False, description="ask the server to generate max_tokens tokens whatever the EOS",
                             json_schema_extra=flag("ignore-eos"))
    api_key: str | None = Field(None, description="sent as 'Authorization: Bearer KEY'",
                                json_schema_extra=flag("api-key"))
    seed: int = Field(0, ge=0, description="seed of the arrivals and the prompts", json_schema_extra=flag("seed"))
    save_result: bool = Field(False, description="write the result as JSON (checked writable before the run)",
                              json_schema_extra=flag("save-result"))
    result_dir: str | None = Field(None, description="folder for --save-result (default: the working folder; "
                                                     "created if missing)",
                                   json_schema_extra=flag("result-dir"))
    result_filename: str | None = Field(None, description="file name for --save-result (default: "
                                                          "openai-RATEqps-MODEL-DATE.json)",
                                        json_schema_extra=flag("result-filename"))
    request_timeout_s: float = Field(600.0, gt=0, le=MAX_REQUEST_TIMEOUT_S,
                                     description="most seconds one request may take, from sending it to its "
                                                 "last token; a request past it fails as timed out",
                                     json_schema_extra=flag("request-timeout"))
    allow_failures: bool = Field(False, description="exit 0 when some (not all) requests failed, instead of 1",
                                 json_schema_extra=flag("allow-failures"))

    @field_validator("request_rate", mode="before")
    @classmethod
    def _not_nan(cls, v: Any) -> Any:
        """inf is a rate (all at once, as in vllm) but nan is not, and `gt` would call it "not > 0"."""
        if isinstance(v, float) and math.isnan(v):
            raise ValueError("nan is not a rate; allowed: a number > 0, or inf (all at once)")
        return v

    @field_validator("base_url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")) or len(v.split("://", 1)[1]) == 0:
            raise ValueError(f"{v!r} is not a server address; allowed: http://HOST[:PORT] or https://HOST[:PORT]")
        return v

    @field_validator("goodput")
    @classmethod
    def _goodput(cls, v: list[str] | None) -> list[str] | None:
        keys: set[str] = set()
        for item in v or []:
            key, sep, value = item.partition(":")
            if key not in GOODPUT_KEYS or not sep:
                raise ValueError(f"{item!r} is not KEY:MS; allowed keys: {', '.join(GOODPUT_KEYS)} "
                                 "(e.g. ttft:1000)")
            try:
                ms = float(value)
            except ValueError:
                raise ValueError(f"{item!r}: {value!r} is not a number of milliseconds") from None
            if not math.isfinite(ms) or ms < 0:
                raise ValueError(f"{item!r}: allowed: a finite number of milliseconds >= 0")
            if key in keys:
                raise ValueError(f"{item!r}: {key} is given twice")
            keys.add(key)
        return v

    @field_validator("percentile_metrics")
    @classmethod
    def _metrics(cls, v: str) -> str:
        names = [m.strip() for m in v.split(",") if m.strip()]
        if not names:
            raise ValueError(f"{v!r} names no metric; allowed: {', '.join(METRICS)}")
        for m in names:
            if m not in METRICS:
                raise ValueError(f"unknown metric {m!r}; allowed: {', '.join(METRICS)}")
        return v

    @field_validator("metric_percentiles")
    @classmethod
    def _percentiles(cls, v: str) -> str:
        try:
            values = [float(x) for x in v.split(",")]
        except ValueError:
            raise ValueError(f"{v!r} is not a comma-separated list of numbers; allowed: each in (0, 100)") from None
        if not all(0 < p < 100 for p in values):
            raise ValueError(f"{v!r}: allowed: each in (0, 100), e.g. 50,90,99")
        return v

    @field_validator("result_dir", "result_filename", "trace")
    @classmethod
    def _nonempty(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError(f"{v!r} is not a path; allowed: a non-empty path")
        return v

    @model_validator(mode="after")
    def _fits(self) -> BenchConfig:
        total = self.num_prompts * self.random_input_len
        if self.trace is None and total > MAX_PROMPT_TEXT_TOKENS:
            raise ValueError(f"--num-prompts x --random-input-len is {total:,} tokens of prompt text; "
                             f"allowed: at most {MAX_PROMPT_TEXT_TOKENS:,}")
        return self

    @property
    def slos(self) -> dict[str, float]:
        """The --goodput SLOs in milliseconds by metric."""
        return {k: float(ms) for k, _, ms in (item.partition(":") for item in self.goodput or [])}

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.percentile_metrics.split(",") if m.strip())

    @property
    def percentiles(self) -> tuple[float, ...]:
        return tuple(float(x) for x in self.metric_percentiles.split(","))
