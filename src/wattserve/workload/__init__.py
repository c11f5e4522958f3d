"""Workloads: request arrivals with prompt and output lengths, from traces or generators."""

from wattserve.workload.step_signal import SHAPES, load_steps, shape_steps
from wattserve.workload.synthetic import AZURE_CONV, LengthDist, SyntheticSpec, generate
from wattserve.workload.traces import load_trace
from wattserve.workload.workload import Workload

__all__ = ["AZURE_CONV", "SHAPES", "LengthDist", "SyntheticSpec", "Workload", "generate", "load_steps", "load_trace",
           "shape_steps"]
