"""Planning a decode run whose step governor answers more often than the batch changes.

The governor is asked at each hold boundary, shown the iteration's planned start and context; each
requested clock's operating point is found once per run, at the run's mean context (the rule a
closed-form run uses), and iteration i then takes alpha + beta * (c0 + i * b) at that clock. The
plan is a table of iteration end times (`DecodeRun.table`); the run is still one event. A run cut
short drops the rest of its plan, so a governor may be asked about iterations that never run.
"""

from __future__ import annotations

from wattserve.catalog.models import BatchShape
from wattserve.seam.governor import StepDecision, StepGovernor
from wattserve.sim.step_clock import DECODE, StepClock
from wattserve.sim.step_view import InstanceView

Point = tuple[int, float, float, float]
"""(clock MHz, power W, alpha, beta) at one requested clock."""


def plan_table(governor: StepGovernor, view: InstanceView, clock: StepClock, first: StepDecision, k: int, b: int,
               c0: int, t0: float) -> tuple[list[float], list[int | None], dict[int | None, Point]]:
    """End times (s after t0) and requested clocks of k decode iterations, and the operating point
    of each requested clock. `first` is the governor's answer for the first iteration."""
    lat = clock.latency
    decide = governor.decide
    mid = BatchShape(decode_seqs=b, decode_ctx=int(c0 + b * (k - 1) / 2))
    points: dict[int | None, Point] = {}
    steps: dict[int | None, tuple[float, float]] = {}
    cum: list[float] = []
    req: list[int | None] = []
    cum_append, req_append = cum.append, req.append
    t = 0.0
    i = 0
    d = first
    while True:
        key = d.clock_mhz
        st = steps.get(key)
        if st is None:
            op = clock.choose(mid, DECODE, key)
            a, bt = lat.decode_coeffs(b, op.clock_mhz)
            points[key] = (op.clock_mhz, op.power_w, a, bt)
            st = steps[key] = (a + bt * c0, bt * b)
        h = d.hold_iters
        if h == 1:
            t += st[0] + st[1] * i
            cum_append(t)
            req_append(key)
            i += 1
        else:
            base, grow = st
            n = i + h if h < k - i else k
            while i < n:
                t += base + grow * i
                cum_append(t)
                req_append(key)
                i += 1
        if i >= k:
            break
        view.planned_t = t0 + t
        view.planned_ctx = c0 + i * b
        d = decide(view)
    view.planned_t = None
    return cum, req, points
