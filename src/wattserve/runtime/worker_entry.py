"""How a worker process begins. `run_worker` is the target of a worker spawned by the server
(runtime.launcher.ProcessLauncher); `python -m wattserve.runtime.worker_entry SPEC_JSON` starts one
from a command line (runtime.launcher.CommandLauncher), reporting {"port", "pid"} (or {"error"}) as
its first stdout line. Both import the engine (and torch) in the worker only: the router imports
this module to name the target."""

from __future__ import annotations

import json
import sys
from typing import Any

from wattserve.runtime.worker_spec import WorkerSpec, spec_from_json


class _StdoutReady:
    """worker_main's `ready` end, writing one JSON line to stdout instead of a pipe."""

    def send(self, msg: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        sys.stdout.flush()


def run_worker(spec: WorkerSpec, ready: Any) -> None:
    from wattserve.runtime.worker import worker_main

    worker_main(spec, ready)


def main(argv: list[str]) -> None:
    run_worker(spec_from_json(argv[0]), _StdoutReady())


if __name__ == "__main__":
    main(sys.argv[1:])
