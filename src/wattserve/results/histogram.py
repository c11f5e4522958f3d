"""A log-bucketed histogram with exact sums, for the inter-token latency distribution.

The simulator advances many decode iterations at once, so it never sees individual inter-token
gaps; it knows each run's iteration times form an arithmetic sequence. `add_linear` spreads such a
run across buckets in proportion to overlap, in time proportional to the buckets spanned. Means
are exact; quantiles are accurate to the bucket width (1%).
"""

from __future__ import annotations

import math


class LogHistogram:
    __slots__ = ("lo", "growth", "_log_g", "counts", "total", "sum")

    def __init__(self, lo: float = 1e-5, hi: float = 1e4, growth: float = 1.01) -> None:
        self.lo = lo
        self.growth = growth
        self._log_g = math.log(growth)
        n = int(math.ceil(math.log(hi / lo) / self._log_g)) + 2
        self.counts = [0.0] * n
        self.total = 0.0
        self.sum = 0.0

    def _bin(self, v: float) -> int:
        if v <= self.lo:
            return 0
        b = int(math.log(v / self.lo) / self._log_g) + 1
        return b if b < len(self.counts) else len(self.counts) - 1

    def _edge(self, b: int) -> float:
        return self.lo * self.growth ** (b - 1)

    def add(self, v: float, n: float = 1.0) -> None:
        self.counts[self._bin(v)] += n
        self.total += n
        self.sum += v * n

    def add_each(self, values: list[float], n: float) -> None:
        """Each of `values`, counted n times (a governed run's iteration gaps)."""
        self.total += n * len(values)
        self.sum += math.fsum(values) * n
        b0, b1 = self._bin(min(values)), self._bin(max(values))
        counts = self.counts
        if b0 == b1:
            counts[b0] += n * len(values)
            return
        for v in values:
            counts[self._bin(v)] += n

    def add_linear(self, first: float, last: float, iters: int, weight: float) -> None:
        """`iters` values evenly spaced from first to last, each counted `weight` times."""
        if iters <= 0 or weight <= 0:
            return
        n = iters * weight
        self.total += n
        self.sum += weight * iters * (first + last) / 2.0
        b0, b1 = self._bin(first), self._bin(last)
        if b0 == b1 or last <= first:
            self.counts[b0] += n
            return
        span = last - first
        for b in range(b0, b1 + 1):
            lo = max(first, self._edge(b)) if b > 0 else first
            hi = min(last, self._edge(b + 1))
            if hi > lo:
                self.counts[b] += n * (hi - lo) / span

    def quantile(self, q: float) -> float:
        if self.total <= 0:
            return float("nan")
        target = q * self.total
        acc = 0.0
        for b, c in enumerate(self.counts):
            if c <= 0:
                continue
            if acc + c >= target:
                lo = self._edge(b) if b > 0 else 0.0
                hi = self._edge(b + 1)
                frac = (target - acc) / c
                return lo + (hi - lo) * frac
            acc += c
        return self._edge(len(self.counts))

    @property
    def mean(self) -> float:
        return self.sum / self.total if self.total > 0 else float("nan")
