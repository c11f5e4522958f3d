"""`python -m wattserve.runtime.worker_entry SPEC_JSON`: one worker started by a command line
(runtime.launcher.CommandLauncher), reporting {"port", "pid"} (or {"error"}) as its first stdout line."""

from __future__ import annotations

import json
import sys
from typing import Any

from wattserve.runtime.worker import spec_from_json, worker_main


class _StdoutReady:
    """worker_main's `ready` end, writing one JSON line to stdout instead of a pipe."""

    def send(self, msg: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        sys.stdout.flush()


def main(argv: list[str]) -> None:
    worker_main(spec_from_json(argv[0]), _StdoutReady())


if __name__ == "__main__":
    main(sys.argv[1:])
