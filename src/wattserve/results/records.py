"""Per-request records, in columns: one slot per request of the workload."""

from __future__ import annotations

from typing import Protocol

import numpy as np

PENDING, COMPLETED, FAILED = 0, 1, 2
STATUS_NAMES = {PENDING: "pending", COMPLETED: "completed", FAILED: "failed"}


class FinishedRequest(Protocol):
    """What the records read of a request when it ends (the simulator's request satisfies it)."""

    rid: int
    arrival: float
    t_first_token: float
    t_scheduled: float
    max_itl: float
    prefill_inst: int
    decode_inst: int
    preemptions: int


class RequestRecords:
    def __init__(self, arrival: np.ndarray, prompt: np.ndarray, output: np.ndarray) -> None:
        n = len(arrival)
        self.arrival = arrival
        self.prompt = prompt
        self.output = output
        nan = np.full(n, np.nan)
        self.ttft = nan.copy()
        self.finish = nan.copy()
        self.queue = nan.copy()
        self.max_itl = nan.copy()
        self.status = np.zeros(n, dtype=np.int8)
        self.prefill_inst = np.full(n, -1, dtype=np.int32)
        self.decode_inst = np.full(n, -1, dtype=np.int32)
        self.preemptions = np.zeros(n, dtype=np.int32)
        self.fail_reason: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.arrival)

    def complete(self, req: FinishedRequest, t: float) -> None:
        i = req.rid
        self.status[i] = COMPLETED
        self.ttft[i] = req.t_first_token - req.arrival
        self.finish[i] = t
        self.queue[i] = req.t_scheduled - req.arrival
        self.max_itl[i] = req.max_itl
        self.prefill_inst[i] = req.prefill_inst
        self.decode_inst[i] = req.decode_inst
        self.preemptions[i] = req.preemptions

    def fail(self, req: FinishedRequest, reason: str) -> None:
        self.status[req.rid] = FAILED
        self.fail_reason[req.rid] = reason
        self.prefill_inst[req.rid] = req.prefill_inst
        self.decode_inst[req.rid] = req.decode_inst

    @property
    def e2el(self) -> np.ndarray:
        return self.finish - self.arrival

    @property
    def tpot(self) -> np.ndarray:
        """(e2e - ttft) / (output - 1), as `vllm bench serve` computes TPOT; NaN for 1-token outputs."""
        with np.errstate(invalid="ignore", divide="ignore"):
            t = (self.e2el - self.ttft) / (self.output - 1)
        t[self.output <= 1] = np.nan
        return t
