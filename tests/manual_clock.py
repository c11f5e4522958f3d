"""A clock a test moves by hand (`clock.t = 1.5`), for agents and models that take a `clock` callable."""

from __future__ import annotations


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t
