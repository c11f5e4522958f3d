"""Per-request state inside the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None
    """Return the chosen token's log-probability and this many top alternatives (0: none); None:
    no logprobs."""


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Sequence:
    """token_ids holds the prompt and every generated token; the first num_computed of them have
    KV in the cache. `prefill_only` sequences stop after their first token, for KV hand-off.
    Times are seconds since the engine started: `arrival_s` when it entered this engine,
    `decode_from` (time, tokens generated then) where this engine's decoding began, for TPOT."""

    seq_id: str
    token_ids: list[int]
    prompt_len: int
    params: SamplingParams
    prefill_only: bool = False
    num_computed: int = 0
    block_table: list[int] = field(default_factory=list)
    status: Status = Status.WAITING
    finish_reason: str | None = None
    generator: torch.Generator | None = None
    preemptions: int = 0
    arrival_s: float = 0.0
    decode_from: tuple[float, int] | None = None

    @property
    def num_generated(self) -> int:
        return len(self.token_ids) - self.prompt_len

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.prompt_len:]

    @property
    def uncomputed(self) -> int:
        return len(self.token_ids) - self.num_computed
