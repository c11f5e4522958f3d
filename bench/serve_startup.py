"""How long `wattserve serve` takes to start: seconds from the command to its "listening" line, for
the tiny model on one prefill and one decode worker (CPU), as a user starts it.

The router imports no torch (only the workers do), which this measures against any other checkout:
`--vs DIR` runs the same command with DIR/src first on PYTHONPATH, alternating with this checkout so
both see the same machine. The last line printed is one JSON object: runs, startup_s (each run of
this checkout), median_s, and with --vs: vs_startup_s, vs_median_s, ratio (this / vs, medians).
Usage: python bench/serve_startup.py [--runs 5] [--vs /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def start_once(src: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src / "src")}
    cmd = [sys.executable, "-m", "wattserve", "serve", "--model", "tiny", "--port", "0", "--prefill", "1",
           "--decode", "1"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if "listening on" in line:
                return time.perf_counter() - t0
        raise RuntimeError(f"serve exited with {proc.wait()} before listening")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--vs", type=Path, help="another checkout to time side by side")
    a = ap.parse_args()
    mine: list[float] = []
    other: list[float] = []
    for _ in range(a.runs):
        mine.append(start_once(HERE))
        if a.vs is not None:
            other.append(start_once(a.vs))
    out: dict[str, object] = {"runs": a.runs, "startup_s": [round(x, 3) for x in mine],
                              "median_s": round(statistics.median(mine), 3)}
    if other:
        out |= {"vs_startup_s": [round(x, 3) for x in other], "vs_median_s": round(statistics.median(other), 3),
                "ratio": round(statistics.median(mine) / statistics.median(other), 3)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
