"""A scenario swept over request rates per workload, declared once as `sweep`."""

from __future__ import annotations


class RateSweep:
    """Mixed into a scenario dataclass whose `sweep` field lists (workload, rates in req/s), in the
    order the comparison runs them: the names and the rates are read from it, never kept twice."""

    sweep: tuple[tuple[str, tuple[float, ...]], ...]

    @property
    def workloads(self) -> tuple[str, ...]:
        return tuple(w for w, _ in self.sweep)

    @property
    def rates(self) -> dict[str, tuple[float, ...]]:
        return dict(self.sweep)
