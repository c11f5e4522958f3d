"""A workload: arrays of arrival times and token lengths, sorted by arrival.

Arrays rather than objects, so that a million-request workload costs tens of MB and the simulator
creates per-request state only when a request arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wattserve.errors import UsageError


@dataclass(frozen=True)
class Workload:
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    name: str = "workload"

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if len(self.prompt_tokens) != n or len(self.output_tokens) != n:
            raise ValueError("workload arrays differ in length")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def span_s(self) -> float:
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) > 1 else 0.0

    @property
    def rate(self) -> float:
        return (len(self) - 1) / self.span_s if self.span_s > 0 else 0.0

    def between(self, start_s: float, end_s: float | None) -> Workload:
        """Requests arriving in [start_s, end_s), times made relative to start_s; empty when none
        does (a window of a trace with gaps)."""
        mask = self.arrival_s >= start_s
        if end_s is not None:
            mask &= self.arrival_s < end_s
        return Workload(self.arrival_s[mask] - start_s, self.prompt_tokens[mask], self.output_tokens[mask],
                        self.name)

    def window(self, start_s: float | None, end_s: float | None) -> Workload:
        """`between`, refusing an empty or inverted window (what a user's --duration asks for)."""
        lo = 0.0 if start_s is None else start_s
        if end_s is not None and end_s <= lo:
            raise UsageError(f"end {end_s:g} s must be after start {lo:g} s", "workload.duration_s")
        w = self.between(lo, end_s)
        if not len(w):
            raise UsageError(f"no request arrives in [{lo:g}, {end_s}) s; the trace spans "
                             f"[0, {self.span_s:.1f}] s", "workload.duration_s")
        return w

    def rescale(self, rate: float) -> Workload:
        """Stretch or squeeze time so that the mean request rate becomes `rate` (req/s)."""
        if rate <= 0:
            raise UsageError(f"{rate:g} must be > 0 req/s", "workload.rate")
        if self.rate <= 0:
            raise UsageError("the trace has fewer than two distinct arrival times; cannot rescale", "workload.rate")
        return Workload(self.arrival_s * (self.rate / rate), self.prompt_tokens, self.output_tokens, self.name)

    def repeat(self, times: int) -> Workload:
        """The trace played `times` times end to end (each copy starts one mean gap after the last)."""
        if times < 1:
            raise UsageError(f"{times} must be >= 1", "workload.repeat")
        if times == 1:
            return self
        gap = 1.0 / self.rate if self.rate > 0 else 1.0
        period = self.span_s + gap
        arr = np.concatenate([self.arrival_s + i * period for i in range(times)])
        return Workload(arr, np.tile(self.prompt_tokens, times), np.tile(self.output_tokens, times), self.name)

    def head(self, n: int) -> Workload:
        return Workload(self.arrival_s[:n], self.prompt_tokens[:n], self.output_tokens[:n], self.name)
