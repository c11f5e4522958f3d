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


Action = SetPowerCap | SetClock | SetRole | SetBatchLimit | SetComputeShare
