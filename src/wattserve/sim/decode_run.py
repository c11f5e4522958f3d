"""The closed-form state of one step: a mixed iteration, or a run of k decode iterations.

While the decode batch does not change, iteration i of a run takes alpha + beta * (c0 + i * b)
seconds (b sequences, total context c0 at the first iteration), so the end of iteration k is a
closed form and a run of k iterations is one event. When something changes mid-run (an arrival, a
hand-off, a settled cap, a new clock), the run is cut at the iteration in flight (`iters_done`,
`rebase`), and that iteration may finish at a new speed (`rescale`): `first_scale` is the fraction
of the first iteration still to run, at `d0` seconds per full iteration.

A run whose governor answers iteration by iteration (different clocks) has no single closed form; it
is planned as a table instead: `cum[i]` is the end of iteration i + 1 (seconds after the planning
time) and `req[i]` the clock the governor asked for it. It is still one event, cut in the same way;
`off` counts the iterations already booked.
"""

from __future__ import annotations

import math
from bisect import bisect_right

from wattserve.catalog.models import BatchShape


class DecodeRun:
    __slots__ = ("t0", "k", "b", "c0", "alpha", "beta", "d0", "first_scale", "first_start", "end", "shape",
                 "chunks", "joiners", "cum", "req", "off", "points")

    def __init__(self) -> None:
        self.t0 = 0.0
        self.k = 0
        self.b = 0
        self.c0 = 0
        self.alpha = 0.0
        self.beta = 0.0
        self.d0 = 0.0
        self.first_scale = 1.0
        self.first_start = 0.0
        self.end = 0.0
        self.shape: BatchShape | None = None
        """The batch of a mixed iteration; None for a decode run."""
        self.chunks: list = []
        """(request, tokens) prefill chunks of a mixed iteration."""
        self.joiners: list = []
        """Requests that joined the decode batch at the start of this step."""
        self.cum: list[float] | None = None
        self.req: list[int | None] = []
        self.off = 0
        self.points: dict[int | None, tuple[int, float, float, float]] = {}
        """Requested clock -> (clock, power W, alpha, beta) for a table run."""

    def begin(self, now: float) -> None:
        self.t0 = now
        self.first_start = now
        self.first_scale = 1.0

    def mixed(self, shape: BatchShape, chunks: list, b: int, c0: int, d0: float) -> None:
        self.cum = None
        self.shape = shape
        self.chunks = chunks
        self.k = 1
        self.b = b
        self.c0 = c0
        self.d0 = d0

    def decode(self, k: int, b: int, c0: int, alpha: float, beta: float) -> None:
        self.shape = None
        self.chunks = []
        self.cum = None
        self.k = k
        self.b = b
        self.c0 = c0
        self.alpha = alpha
        self.beta = beta
        self.d0 = alpha + beta * c0

    def table(self, cum: list[float], req: list[int | None],
              points: dict[int | None, tuple[int, float, float, float]]) -> None:
        self.cum = cum
        self.req = req
        self.points = points
        self.off = 0
        self.d0 = cum[0]

    def run_time(self, k: int) -> float:
        """Time from t0 to the end of iteration k."""
        cum = self.cum
        if cum is not None:
            off = self.off
            return cum[off + k - 1] - (cum[off - 1] if off else 0.0) if k else 0.0
        a, bt, c0, b = self.alpha, self.beta, self.c0, self.b
        full = k * (a + bt * c0) + bt * b * k * (k - 1) / 2.0
        return full - (1.0 - self.first_scale) * self.d0

    def table_steps(self, k: int) -> tuple[list[float], list[float], list[float], list[int]]:
        """Iterations 2..k of a table run from `off`: their durations, start times, power (W) and
        clocks (MHz)."""
        cum, req, points, off = self.cum, self.req, self.points, self.off
        assert cum is not None
        base = self.t0 - (cum[off - 1] if off else 0.0)
        ends = cum[off:off + k]
        gaps = [e1 - e0 for e0, e1 in zip(ends, ends[1:])]
        starts = [base + e for e in ends[:-1]]
        pts = [points[r] for r in req[off + 1:off + k]]
        return gaps, starts, [p[1] for p in pts], [p[0] for p in pts]

    def step_time(self) -> float:
        if self.shape is not None:
            return self.first_scale * self.d0
        return self.run_time(self.k)

    def iters_done(self, tau: float) -> int:
        """Iterations completed by tau seconds after t0."""
        first = self.first_scale * self.d0
        if tau < first:
            return 0
        cum = self.cum
        if cum is not None:
            off = self.off
            return bisect_right(cum, (cum[off - 1] if off else 0.0) + tau, off, off + self.k) - off
        a = self.beta * self.b / 2.0
        b = self.d0 - a
        c = -(tau + (1.0 - self.first_scale) * self.d0)
        j = int((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)) if a > 0 else int(-c / b)
        j = max(0, min(j, self.k))
        while j > 0 and self.run_time(j) > tau:
            j -= 1
        while j < self.k and self.run_time(j + 1) <= tau:
            j += 1
        return j

    def current_shape(self) -> BatchShape:
        if self.shape is not None:
            return self.shape
        return BatchShape(decode_seqs=self.b, decode_ctx=self.c0)

    def rebase(self, j: int, t_j: float) -> None:
        """Start the run afresh at the end of its iteration j (already booked), at time t_j."""
        self.c0 += j * self.b
        self.t0 = t_j
        self.first_start = t_j
        self.first_scale = 1.0
        self.joiners = []
        cum = self.cum
        if cum is not None:
            self.off += j
            self.d0 = cum[self.off] - cum[self.off - 1]
        else:
            self.d0 = self.alpha + self.beta * self.c0

    def rescale(self, now: float, d_new: float, remaining: float) -> None:
        """The iteration in flight finishes its `remaining` fraction at d_new seconds per iteration
        (alpha and beta already set for it: a table run continues in closed form)."""
        self.cum = None
        self.t0 = now
        self.d0 = d_new
        self.first_scale = remaining
