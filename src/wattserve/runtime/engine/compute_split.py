"""How the concurrent engine divides a device's compute between its prefill and decode sides, after
RAPID-Serve ("RAPID-Serve: Resource-efficient and Accelerated P/D Intra-GPU Disaggregation", Masood,
Gaur, Jayasena, arXiv 2601.11822), whose resource manager gives decode the fewest compute units that
keep its ITL within the SLO and prefill the rest, or every unit to both ("overallocation").

A split is a set of units (CPU cores, or groups of SMs on a GPU) and a way for one side to enter its
part of them. Implementations:
- `CoreSplit` (here): CPU cores through `sched_setaffinity` and `torch.set_num_threads`, per process;
- `SharedUnits` (here): one unit both sides share, on any device: overallocation only, the form a
  device without partitioning takes (plain CUDA streams, or threads of one CPU process);
- `GreenContextSplit` (sm_split.py): disjoint SM partitions on a CUDA GPU through green contexts.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch

from wattserve.runtime.engine.core_share import affinity, apply_share

Share = int | float | None
"""A decode share: an int is a number of units, a float in (0, 1] a fraction of them, None all of
them for both sides (RAPID-Serve's "overallocation")."""
Part = tuple[int, ...]
"""The units one side runs on."""
Side = Literal["decode", "prefill"]


class ComputeSplit(Protocol):
    kind: str
    """What a unit is and how a part is enforced: "cores", "green-contexts" or "shared"."""
    units: Part
    """Every unit the two sides divide."""

    def enter(self, side: Side, part: Part) -> bool:
        """Run the calling thread's (or process's) side on `part` from its next kernel on; False when
        the part could not be enforced (it is then advisory)."""
        ...

    def restore(self) -> None:
        """Give the calling side the whole device back, as it was before the split."""
        ...


def split_units(units: Part, share: Share) -> tuple[Part, Part]:
    """(decode units, prefill units) for a share. Each side gets at least one unit; with fewer units
    than that, or None, they overlap (overallocation)."""
    if share is None:
        return units, units
    if isinstance(share, bool) or not isinstance(share, int | float):
        raise TypeError(f"decode share: {share!r} is not a unit count, a fraction or None")
    if isinstance(share, float):
        if not 0.0 < share <= 1.0:
            raise ValueError(f"decode share: fraction {share} is not in (0, 1]")
        n = max(1, round(share * len(units)))
    else:
        if share < 1:
            raise ValueError(f"decode share: {share} units; at least 1")
        n = share
    n = min(n, len(units))
    return units[:n], units[n:] or units[-1:]


class CoreSplit:
    """CPU cores: a side's part is the cores its threads may run on and as many intra-op threads.
    Per process (affinity and torch's thread pool are process-wide), so the two sides must be two
    processes; the prefill process builds its own from the same cores."""

    kind = "cores"

    def __init__(self, units: Part | None = None, threads: int | None = None) -> None:
        self.units = affinity() if units is None else units
        self.threads = torch.get_num_threads() if threads is None else threads
        """The intra-op threads before the split, which `restore` puts back."""

    def enter(self, side: Side, part: Part) -> bool:
        return apply_share(len(part), part)

    def restore(self) -> None:
        apply_share(self.threads, self.units)


class SharedUnits:
    """No partition: both sides always run on the whole device (overallocation), each on its own CUDA
    stream on a GPU so the hardware interleaves their kernels, or as two threads of one CPU process.
    With a single unit every share splits into two overlapping parts, so a governor's share changes
    nothing here; the engine reports the split's kind so that a user sees it."""

    kind = "shared"
    units: Part = (0,)

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.streams: dict[str, torch.cuda.Stream] = {}
        if device.type == "cuda":
            self.streams = {side: torch.cuda.Stream(device) for side in ("decode", "prefill")}

    def enter(self, side: Side, part: Part) -> bool:
        if self.streams:
            torch.cuda.set_device(self.device)
            torch.cuda.set_stream(self.streams[side])
        return True

    def restore(self) -> None:
        if self.streams:
            torch.cuda.set_stream(torch.cuda.default_stream(self.device))
