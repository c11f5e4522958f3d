"""A finished simulation as plain data: what outputs, summaries and experiments read.

Arrays are numpy copies of the simulator's series, so a result holds no live simulator object and
can be pickled across processes (compare's worker pool does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from wattserve.results.histogram import LogHistogram
from wattserve.results.records import RequestRecords
from wattserve.schema.cluster import ClusterConfig
from wattserve.workload.workload import Workload


@dataclass
class GpuTrace:
    index: int
    instance: int
    node: int
    idle_w: float
    cap_w: float
    """Cap in force at the end of the run, W."""
    times: np.ndarray
    watts: np.ndarray
    """Power draw from times[i] on."""
    cap_times: np.ndarray
    cap_values: np.ndarray
    """Cap in force (settled) from cap_times[i] on."""
    clock_times: np.ndarray
    clock_values: np.ndarray
    """SM clock (MHz) from clock_times[i] on."""
    prefill_energy_j: float
    decode_energy_j: float
    idle_energy_j: float

    @property
    def energy_j(self) -> float:
        return self.prefill_energy_j + self.decode_energy_j + self.idle_energy_j


@dataclass
class InstanceTrace:
    iid: int
    role: str
    """Role at the end of the run."""
    gpus: tuple[int, ...]
    preemptions: int
    kv_peak_blocks: int
    kv_blocks: int
    role_changes: int
    iterations: int
    busy_s: float


@dataclass
class LinkTrace:
    name: str
    bytes_moved: float
    transfers: int
    busy_s: float


@dataclass
class SimResult:
    config: ClusterConfig
    workload: Workload
    records: RequestRecords
    gpus: list[GpuTrace]
    instances: list[InstanceTrace]
    links: list[LinkTrace]
    itl_hist: LogHistogram
    end_s: float
    """When the last request completed or failed: the run's duration."""
    events: int
    role_events: list[tuple[float, int, str]] = field(default_factory=list)
    """(time, instance, role or 'switching'), starting with each instance's initial role at 0."""
