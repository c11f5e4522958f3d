"""What does not change while a cluster runs: the facts a model-based controller plans with.

`ClusterState` is a snapshot that every observation rebuilds; `ClusterInfo` is read once. A
model-based controller (BiScale's MPC over SM clocks, arXiv 2602.18755; PALS's power-aware batch
limits) needs the GPU kind and model to pick its latency and power models, the clock table to
search, the cap range to stay inside, and which GPUs move together (a TP group shares one clock and
one batch). Both back ends fill it from the same sources they actuate through, so a plan made from
it is one the back end accepts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClusterInfo:
    gpu: str
    """GPU kind: the catalog name (`wattserve.catalog.gpus`) the back end models or runs on."""
    model: str
    """Model served: the catalog name (simulator) or the runtime's model name."""
    tp: int
    """Tensor-parallel GPUs per instance (every instance has this many)."""
    clocks_mhz: tuple[int, ...]
    """Supported SM clocks, MHz, ascending: the values SetClock and a step governor may ask for."""
    cap_min_w: float
    """Lowest per-GPU power cap the back end accepts, W."""
    cap_max_w: float
    """Highest per-GPU power cap the back end accepts, W."""
    instance_gpus: tuple[tuple[int, ...], ...]
    """GPU indices of each instance, indexed by instance id; fixed for the cluster's life (a role
    change keeps an instance's GPUs)."""

    @property
    def clock_max_mhz(self) -> int:
        return self.clocks_mhz[-1]

    @property
    def clock_min_mhz(self) -> int:
        return self.clocks_mhz[0]

    @property
    def gpu_count(self) -> int:
        return sum(len(g) for g in self.instance_gpus)

    def instance_of_gpu(self, gpu: int) -> int:
        for iid, gpus in enumerate(self.instance_gpus):
            if gpu in gpus:
                return iid
        raise KeyError(gpu)
