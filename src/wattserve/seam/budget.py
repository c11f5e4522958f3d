"""A cluster power budget over time."""

from __future__ import annotations

from wattserve.seam.signal import StepSignal


class BudgetSignal(StepSignal):
    """A piecewise-constant cluster power budget: watts[i] holds from times[i] on.

    A `StepSignal` in watts; `watts` names its values for the guard and the tests that read them."""

    @property
    def watts(self) -> tuple[float, ...]:
        return self.values
