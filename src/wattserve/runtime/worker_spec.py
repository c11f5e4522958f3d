"""A worker's spec and its JSON form. Free of torch, so that the router, which builds specs and
starts workers, does not import it (about 2 s of a server's start on a CPU); the worker process
imports the engine itself (`worker_entry.run_worker`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from wattserve.runtime.engine.args import EngineArgs


@dataclass(frozen=True)
class WorkerSpec:
    wid: int
    role: str
    engine: EngineArgs
    transport: str = "shm"
    threads: int = 1
    host: str = "127.0.0.1"
    gpu: str = "h100"
    """Catalog GPU this worker's power is modelled as (the server's --gpu)."""
    power_as_model: str = "llama-3.1-8b"
    """Catalog model this worker's iterations are modelled as (the server's power_as_model)."""
    governor: str = "max-clock"
    """Step governor asked before every iteration (wattserve.governors)."""
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None
    shm_prefix: str | None = None
    """Name prefix of the KV segments this worker creates (transport.owner_prefix): its server can
    sweep what it leaves if it dies."""
    power_backend: str = "auto"
    """This worker's own power agent (runtime.power.local): auto, nvml, amdsmi or modelled."""
    step_log: str | None = None
    """A folder to log every step's shape and time into (runtime.step_log), or None."""


def spec_to_json(spec: WorkerSpec) -> str:
    """The spec as JSON, for a worker started by a command line (runtime.launcher)."""
    from dataclasses import fields

    return json.dumps({f.name: (spec.engine.model_dump() if f.name == "engine" else getattr(spec, f.name))
                       for f in fields(spec)})


def spec_from_json(text: str) -> WorkerSpec:
    d = json.loads(text)
    return WorkerSpec(**{**d, "engine": EngineArgs(**d["engine"])})
