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


OWNED = ("config.yaml", "summary.json", "requests.csv", "power.csv", "clocks.csv", "actuations.csv",
         "latency_cdf.png", "cluster_power.png", "compare.json", "compare.md", "attainment_vs_rate_*.png",
         "power_roles_*.png", "UNCALIBRATED.txt", "validate.json", "validate.md", "cdf.png", "profile-*.json",
         "profile_table.csv", "grid_profile.json", "serving_table-*.csv", "steps", "caps.csv", "runs.csv")
"""The files a wattserve run writes into its folder (glob patterns). A new run into the same folder
removes all of them first, so no file of an earlier run (an actuations.csv, a plot it did not make this
time) sits beside the new ones as if it belonged to them; other files are left alone."""


def check_out_dir(out: str | Path, field: str = "out") -> None:
    """Refuse, before any work, a results folder that cannot be written: an empty name, a file in its
    place, a folder without write permission, or a parent that is not a folder. Creates nothing."""
    if str(out) == "":
        raise UsageError("'' is not a path; allowed: a folder to create or reuse", field)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{str(out)!r} exists and is not a folder", field)
    probe = out.resolve()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{str(probe)!r} is not a folder, so {str(out)!r} cannot be created in it", field)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{str(probe)!r} is not writable", field)


def check_out_file(path: str | Path, field: str = "out") -> None:
    """Refuse, before any work, a result file that cannot be written: an empty name, a folder in its
    place, a missing parent folder (or a file where it should be), or no write permission."""
    if str(path) == "":
        raise UsageError("'' is not a path; allowed: a file name", field)
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{str(path)!r} is a folder; allowed: a file name", field)
    parent = path.resolve().parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"{str(parent)!r} is a file, not a folder, so {str(path)!r} cannot be written", field)
    if not parent.is_dir():
        raise UsageError(f"the folder {str(parent)!r} does not exist", field)
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{str(path)!r} is not writable", field)


@contextlib.contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield a staging folder beside `out`; on success the files of any earlier run (OWNED) are
    removed from `out` and the staged files moved in."""
    out = Path(out)
    check_out_dir(out)
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    except OSError as e:
        raise UsageError(f"cannot write to {str(parent)!r} ({e.strerror})", "out") from None
    try:
        yield stage
        out.mkdir(parents=True, exist_ok=True)
        for pattern in OWNED:
            for old in out.glob(pattern):
                if old.is_file() or old.is_symlink():
                    old.unlink()
                elif old.is_dir():
                    shutil.rmtree(old)
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


def write_runs_csv(path: Path, runs: list[dict[str, Any]]) -> None:
    """A comparison's runs as a table, one row per run: every field that is a number, a string or
    empty (timelines, actuations and per-phase lists stay in compare.json), columns in first-seen order."""
    cols: dict[str, None] = {}
    for r in runs:
        for k, v in r.items():
            if v is None or isinstance(v, (int, float, str, bool)):
                cols.setdefault(k, None)
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for r in runs:
            w.writerow(["" if r.get(k) is None else r.get(k) for k in cols])


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=float) + "\n")
