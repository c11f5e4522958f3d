"""A request as the router tracks it, and the ways it can end without finishing.

Its queue carries what the API layer streams to the client: ("token", id), ("done", finish reason)
or ("error", Failure). Every request ends with exactly one "done" or "error" item, whatever happens
to the workers that held it (vLLM's promise: an engine failure never hangs a request)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from wattserve.runtime.engine.sequence import SamplingParams


@dataclass(frozen=True)
class Failure:
    """Why a request ended without finishing, with the HTTP status the API answers (OpenAI's shape:
    503 when no live worker can serve it, 400 for what the client asked, 500 for an engine fault)."""

    message: str
    status: int = 503
    kind: str = "server_error"

    def __str__(self) -> str:
        return self.message


class Unavailable(Exception):
    """No live worker can take a new request (HTTP 503, right away rather than a hang)."""


@dataclass
class RequestState:
    rid: str
    prompt_ids: list[int]
    params: SamplingParams
    created: float
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    wid: int | None = None
    stage: str = "queued"
    in_transit: dict[str, Any] | None = None
    """The KV hand-off handle on its way to a decode worker, until that worker has produced a token
    from it: a segment to discard if the request ends first, and one a sweep must not remove."""
    first_token_t: float | None = None
    last_token_t: float | None = None
    n_tokens: int = 0
    finish_reason: str | None = None
    workers: list[int] = field(default_factory=list)
    logprobs: list[list] = field(default_factory=list)
    """[logprob, [[token, logprob], ...]] of each generated token, when the request asked for them."""
    retries: int = 0
    """Times the request was placed again because the worker holding it died before its first token."""
