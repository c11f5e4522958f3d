"""Two streams on one GPU: how prefill and decode slow each other when they run concurrently.

RAPID-Serve ("RAPID-Serve: Resource-efficient and Accelerated P/D Intra-GPU Disaggregation",
Masood, Gaur, Jayasena, arXiv 2601.11822) runs a prefill stream and a decode stream on the same GPUs
at once, either both on every compute unit ("overallocation": the hardware interleaves their work)
or each on its own share of the compute units (CU masks on MI300X; green contexts on H100). This
module turns the roofline's `IterCost` of a stream run alone into its time beside the other stream.

A stream alone has compute time c (SM-bound seconds at full GPU), memory time m (HBM-bound seconds
at full bandwidth) and a remainder r = t - max(c, m) (launch and host overheads, the part of the
roofline's soft maximum that neither hides). Beside a co-runner:

- its compute part runs on its share of the SMs: c / share;
- its memory part needs SMs too (a memory-bound kernel reaches the HBM peak only from about
  `BW_SATURATION_SHARE` of the SMs) and shares the bandwidth with the co-runner's traffic: when the two
  streams' bandwidth demands (m / t of each, alone) add up to more than 1, both slow by the sum;
- under overallocation the two streams share the SMs in time: each stream's SM demand is what it
  keeps busy alone (max(c, m * BW_SATURATION_SHARE) / t); when the two demands add up to more than 1,
  both slow by the sum, so decode's inter-token latency rises with prefill load;
- a fixed interference for what the roofline does not see (shared L2, scheduling): the paper
  measures about 2% for prefill and 2-5% for decode attention; we take 2% and 3.5%.

The saturation share 0.5 is our assumption (not from the paper, not yet measured here): a decode
step needs about half the SMs to stream the weights at full bandwidth. Power follows the GPU's
combined utilization (`combined`): the compute and memory work of both streams per second, each
capped at 1, so a power cap applies to the sum.
"""

from __future__ import annotations

from typing import NamedTuple

from wattserve.perf.latency import IterCost

BW_SATURATION_SHARE = 0.5
"""Assumed: fraction of the SMs from which a memory-bound kernel streams at the HBM peak."""
INTERFERENCE = {"prefill": 0.02, "decode": 0.035}
"""Slowdown beside an active co-runner beyond the roofline's resources: RAPID-Serve reports about 2%
for prefill and 2-5% for decode attention (arXiv 2601.11822); 3.5% is the middle of that range."""


class Demand(NamedTuple):
    """What a stream running alone at the full GPU asks of it, as fractions of the GPU (a named
    tuple: a concurrent instance's clock search builds several per step)."""

    sm: float
    bw: float


IDLE = Demand(0.0, 0.0)


def demand(cost: IterCost) -> Demand:
    t = cost.time_s
    if t <= 0.0:
        return IDLE
    return Demand(min(1.0, max(cost.compute_s, cost.memory_s * BW_SATURATION_SHARE) / t),
                  min(1.0, cost.memory_s / t))


def shared_time(cost: IterCost, share: float | None, other: Demand | None, interference: float,
                own: Demand | None = None) -> float:
    """Time of an iteration whose alone cost is `cost` (and demand `own`, derived when not given),
    run on `share` of the SMs (None: all of them, overallocated beside `other`) while a co-runner
    with demand `other` runs (None: nothing beside)."""
    t, c, m = cost.time_s, cost.compute_s, cost.memory_s
    if t <= 0.0:
        return 0.0
    r = t - (c if c > m else m)
    if r < 0.0:
        r = 0.0
    if own is None:
        own = demand(cost)
    bw = 1.0
    if other is not None and own.bw + other.bw > 1.0:
        bw = own.bw + other.bw
    if share is None:
        sm = 1.0
        if other is not None and own.sm + other.sm > 1.0:
            sm = own.sm + other.sm
        cc, mm = c * sm, m * (sm if sm > bw else bw)
    else:
        cc = c / share
        sat = share / BW_SATURATION_SHARE
        mm = m * bw / (sat if sat < 1.0 else 1.0)
    out = (cc if cc > mm else mm) + r
    if other is not None:
        out *= 1.0 + interference
    return out


def combined(own: IterCost, own_time_s: float, other: IterCost | None, other_time_s: float) -> IterCost:
    """The GPU's cost while both streams run, over the own stream's iteration: each stream's compute
    and memory work per second of its shared time, summed and capped at the full GPU. The power model
    reads utilization from it, so one cap bounds both streams."""
    uc = own.compute_s / own_time_s if own_time_s > 0 else 0.0
    um = own.memory_s / own_time_s if own_time_s > 0 else 0.0
    if other is not None and other_time_s > 0:
        uc += other.compute_s / other_time_s
        um += other.memory_s / other_time_s
    t = own_time_s
    return IterCost(t, t * (uc if uc < 1.0 else 1.0), t * (um if um < 1.0 else 1.0))
