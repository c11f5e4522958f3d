"""One scrape of a Prometheus /metrics page, and quantiles of histograms between two scrapes.

An engine's /metrics page is the Prometheus text exposition format
(https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format); we parse it with
prometheus_client's own parser rather than by hand, so escaping, comments and `+Inf` are handled as the
engines' own client library writes them. Latency arrives as cumulative histograms: a percentile over a
recent window is the difference of two scrapes' buckets fed to Prometheus' `histogram_quantile`
(https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile), which is what a
Grafana panel of `histogram_quantile(0.9, rate(...[5s]))` would show for the same window.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Buckets = tuple[tuple[float, float], ...]
"""Cumulative histogram buckets as (upper_bound, cumulative_count), sorted by bound, the last bound +Inf."""

_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
"""Sample names a declared family stands for, by type (as prometheus_client's parser names families:
a counter `x_total` is family `x`). The text format lets a labelled family be declared with no samples
yet (a counter none of whose label sets has been incremented); such a name is still on the page."""


@dataclass(frozen=True)
class Sample:
    name: str
    """Sample name as on the page: `vllm:prompt_tokens_total`, `..._bucket`, `..._count`."""
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    """Every sample of one /metrics page, looked up by sample name.

    Engines label samples by model, by data-parallel engine (vLLM's `engine`) or by rank, so the
    lookups sum over label sets unless told which one to take."""

    samples: tuple[Sample, ...]
    declared: frozenset[str] = frozenset()
    """Sample names declared by a `# TYPE` line, whether or not a sample follows."""
    _by_name: dict[str, tuple[Sample, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, list[Sample]] = defaultdict(list)
        for s in self.samples:
            by_name[s.name].append(s)
        object.__setattr__(self, "_by_name", {k: tuple(v) for k, v in by_name.items()})

    def values(self, name: str, **labels: str) -> tuple[float, ...]:
        """Values of the samples named `name` whose labels include `labels`, one per label set."""
        return tuple(s.value for s in self._by_name.get(name, ())
                     if all(s.labels.get(k) == v for k, v in labels.items()))

    def total(self, name: str, **labels: str) -> float | None:
        """Sum of the samples named `name` whose labels include `labels`; None when there is none."""
        found = self.values(name, **labels)
        return math.fsum(found) if found else None

    def has(self, name: str) -> bool:
        """Whether the page carries sample name `name`, or declares a family that stands for it."""
        return name in self._by_name or name in self.declared

    def buckets(self, name: str) -> Buckets | None:
        """Cumulative buckets of histogram `name` (its `name_bucket` samples), summed over every label set
        but `le`, sorted by bound with `+Inf` as math.inf; None when the page has none. Summing cumulative
        counts across label sets is how PromQL aggregates histograms before histogram_quantile
        (`sum by (le) (...)`, https://prometheus.io/docs/practices/histograms/#quantiles)."""
        counts: dict[float, float] = defaultdict(float)
        for s in self._by_name.get(name + "_bucket", ()):
            if "le" in s.labels:
                counts[float(s.labels["le"])] += s.value
        if not counts:
            return None
        return tuple(sorted(counts.items()))


def parse_metrics(text: str) -> Scrape:
    """Parse a /metrics page in the Prometheus text format.

    Raises ValueError with a one-line message (the parser's complaint) when the page is malformed, so a
    caller can report the engine by name and go on with the others."""
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, IndexError, KeyError, TypeError) as e:
        raise ValueError(f"malformed /metrics page: {_one_line(e)}") from e
    samples: list[Sample] = []
    declared: set[str] = set()
    for f in families:
        declared.update(f.name + sfx for sfx in _SUFFIXES.get(f.type, ("",)))
        for s in f.samples:
            if s.name.endswith("_bucket") and "le" in s.labels:
                try:
                    float(s.labels["le"])
                except ValueError as e:
                    raise ValueError(f"malformed /metrics page: {s.name} has le={s.labels['le']!r}, "
                                     f"not a number") from e
            samples.append(Sample(s.name, dict(s.labels), float(s.value)))
    return Scrape(tuple(samples), frozenset(declared))


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    complaint = text or type(e).__name__
    return complaint if len(complaint) <= 200 else complaint[:197] + "..."


def quantile_between(old: Buckets | None, new: Buckets | None, q: float) -> float | None:
    """The q-quantile of the observations made between two scrapes of one histogram: Prometheus'
    histogram_quantile (https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile)
    applied to the bucket-wise difference `new - old`, as `histogram_quantile(q, increase(x_bucket[w]))`
    would give for the window between them.

    As in Prometheus (promql/quantile.go, BucketQuantile): the observation at rank q * count is placed by
    linear interpolation within its bucket, the first bucket's lower bound taken as 0 (unless its upper
    bound is not positive, when that bound is the answer); a quantile in the +Inf bucket is the highest
    finite bound; counts are made monotonic by a running maximum. Unlike Prometheus, q = 0 with an empty
    first bucket gives 0.0 rather than NaN, and q outside [0, 1] raises ValueError rather than giving
    -Inf or +Inf.

    `old` None means "since the engine started" (just `new`). When the bounds of `old` and `new` differ
    (the engine restarted with other buckets) or a bucket count went down (a counter reset: the engine
    restarted), the difference means nothing and `new` alone is used, as Prometheus' rate() and
    increase() treat a reset (https://prometheus.io/docs/prometheus/latest/querying/functions/#rate).
    Returns None when the window holds no observations, or the histogram has no finite bucket.
    Raises ValueError when `new` lacks the +Inf bucket the exposition format requires.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], not {q}")
    if new is None:
        return None
    return _bucket_quantile(q, _difference(old, new))


def _difference(old: Buckets | None, new: Buckets) -> Buckets:
    if old is None or [b for b, _ in old] != [b for b, _ in new]:
        return new
    diff = tuple((b, n - o) for (b, n), (_, o) in zip(new, old))
    if any(c < 0 for _, c in diff):
        return new
    return diff


def _bucket_quantile(q: float, buckets: Buckets) -> float | None:
    if not buckets or not math.isinf(buckets[-1][0]):
        raise ValueError("histogram has no +Inf bucket")
    bounds = [b for b, _ in buckets]
    counts: list[float] = []
    for _, c in buckets:
        counts.append(max(c, counts[-1]) if counts else c)
    if len(buckets) < 2:
        return None
    observations = counts[-1]
    if observations <= 0:
        return None
    rank = q * observations
    b = next((i for i in range(len(buckets) - 1) if counts[i] >= rank), len(buckets) - 1)
    if b == len(buckets) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[b], counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    if count <= 0:
        return start
    return min(max(start + (end - start) * (rank / count), start), end)
