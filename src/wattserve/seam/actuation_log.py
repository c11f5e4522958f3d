"""Every actuation a guard asked for, with its time and outcome."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Actuation:
    time_s: float
    kind: str
    target: int
    value: float | str | None
    status: str
    effective_s: float | None = None
    note: str = ""


@dataclass
class ActuationLog:
    entries: list[Actuation] = field(default_factory=list)

    def add(self, a: Actuation) -> None:
        self.entries.append(a)

    def count(self, kind: str, status: str = "applied") -> int:
        return sum(1 for e in self.entries if e.kind == kind and e.status == status)
