"""What a controller may ask of a back end. Each action names its target by index."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SetPowerCap:
    gpu: int
    watts: float


@dataclass(frozen=True)
class SetClock:
    gpu: int
    mhz: int | None


@dataclass(frozen=True)
class SetRole:
    instance: int
    role: str


@dataclass(frozen=True)
class SetBatchLimit:
    instance: int
    max_seqs: int


@dataclass(frozen=True)
class SetComputeShare:
    instance: int
    phase: str
    fraction: float


@dataclass(frozen=True)
class SetStepTarget:
    """The target of an instance's step governor: the share of the TPOT SLO each decode iteration
    may take (BiScale's decode slack, arXiv 2602.18755), 0 < share <= 1; 0 spends no slack (the
    governor asks for no clock, as max-clock). The controller sets the target; the governor does
    the per-iteration work (issue 15). Only a governor that takes a target accepts it
    (`seam.governor.Targeted`)."""

    instance: int
    share: float


Action = SetPowerCap | SetClock | SetRole | SetBatchLimit | SetComputeShare | SetStepTarget
