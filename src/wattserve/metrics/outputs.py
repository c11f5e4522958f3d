"""Result files. Everything is written into a staging folder first and moved into place only when
complete, so an error never leaves a results folder that looks finished but is not."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from wattserve.errors import UsageError
from wattserve.results.records import STATUS_NAMES
from wattserve.results.sim_result import SimResult

REQUEST_COLUMNS = ("request_id", "arrival_s", "prompt_tokens", "output_tokens", "status", "ttft_ms", "tpot_ms",
                   "e2el_ms", "queue_ms", "max_itl_ms", "finish_s", "prefill_instance", "decode_instance",
                   "preemptions", "slo_met")


@contextlib.contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield a staging folder beside `out`; on success its files replace those in `out`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"out: {str(out)!r} exists and is not a folder")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    except OSError as e:
        raise UsageError(f"out: cannot write to {str(parent)!r} ({e.strerror})") from None
    try:
        yield stage
        out.mkdir(parents=True, exist_ok=True)
        for f in stage.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _fmt(v: float) -> str:
    return "" if v != v else f"{v:.6g}"


def write_requests_csv(path: Path, res: SimResult, met: np.ndarray) -> None:
    r = res.records
    ttft, tpot, e2el = r.ttft * 1e3, r.tpot * 1e3, r.e2el * 1e3
    queue, itl = r.queue * 1e3, r.max_itl * 1e3
    with path.open("w") as f:
        f.write(",".join(REQUEST_COLUMNS) + "\n")
        for i in range(len(r)):
            f.write(f"{i},{r.arrival[i]:.6f},{r.prompt[i]},{r.output[i]},{STATUS_NAMES[int(r.status[i])]},"
                    f"{_fmt(ttft[i])},{_fmt(tpot[i])},{_fmt(e2el[i])},{_fmt(queue[i])},{_fmt(itl[i])},"
                    f"{_fmt(r.finish[i])},{r.prefill_inst[i]},{r.decode_inst[i]},{r.preemptions[i]},"
                    f"{int(met[i])}\n")


def write_power_csv(path: Path, res: SimResult) -> None:
    """Long format: one row per change of a GPU's power (it holds until that GPU's next row)."""
    with path.open("w") as f:
        f.write("time_s,gpu,instance,role,power_w\n")
        for inst in res.instances:
            for gi in inst.gpus:
                g = res.gpus[gi]
                for t, w in zip(g.times, g.watts):
                    f.write(f"{t:.6f},{g.index},{inst.iid},{inst.role},{w:.2f}\n")


def write_clocks_csv(path: Path, res: SimResult) -> None:
    """Long format: one row per change of a GPU's SM clock (it holds until that GPU's next row)."""
    with path.open("w") as f:
        f.write("time_s,gpu,instance,clock_mhz\n")
        for g in res.gpus:
            for t, c in zip(g.clock_times, g.clock_values):
                f.write(f"{t:.6f},{g.index},{g.instance},{int(c)}\n")


def write_actuations_csv(path: Path, log: Any) -> None:
    """Every request the BudgetGuard saw, applied or refused, with its time and when it took effect."""
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("time_s", "kind", "target", "value", "status", "effective_s", "note"))
        for e in log.entries:
            eff = "" if e.effective_s is None else f"{e.effective_s:.6f}"
            w.writerow((f"{e.time_s:.6f}", e.kind, e.target, e.value, e.status, eff, e.note))


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=float) + "\n")
