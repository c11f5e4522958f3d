"""Signals over a run's time, read from a CSV file or built from a named shape: the cluster power
budget (`--budget-trace`, watts) and the throughput target (`--target`, output tokens/s).

File format: a header line that is exactly `time_s,<unit>` (`time_s,watts`, `time_s,tok_s`), then
one row `TIME,VALUE` per change: the value holds from that time (seconds since the run started) until
the next row. Times start at 0 and strictly increase; values are finite and > 0. Rows are numbered
as lines of the file (the header is row 1), and every refusal names the row.

Shapes are relative to the full budget (`--budget W`), after the events operators plan for: a step
down and back up, a ramp down and back up (as a staircase, since a guard acts on changes, not
slopes), and a demand-response event (utilities ask large loads to cut to a fraction for a
fixed window; the PALS issue, arXiv 2605.21427, takes 60% for 15 minutes). Parameters follow the
name: `demand-response:start=120,minutes=3,level=0.6`. This layer returns plain times and values;
`wattserve.seam.StepSignal` wraps them (seam sits above workload)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from wattserve.errors import UsageError

Steps = tuple[tuple[float, ...], tuple[float, ...]]
"""(times, values): values[i] holds from times[i] on."""

MAX_STEPS = 100_000
"""The most changes a signal may hold; the guard schedules one event per change."""


@dataclass(frozen=True)
class Shape:
    """A named budget shape: its parameters' defaults (in order) and what each means."""

    defaults: tuple[tuple[str, float], ...]
    doc: str


SHAPES: dict[str, Shape] = {
    "step": Shape((("start", 60.0), ("seconds", 60.0), ("level", 0.7)),
                  "the full budget, down to level x full at `start` s for `seconds` s, then back up"),
    "ramp": Shape((("start", 30.0), ("seconds", 60.0), ("level", 0.5), ("hold", 0.0), ("every", 5.0)),
                  "from `start` s down to level x full over `seconds` s in equal steps at most `every` s "
                  "apart, `hold` s at the bottom, then back up the same way"),
    "demand-response": Shape((("start", 120.0), ("minutes", 15.0), ("level", 0.6)),
                             "a demand-response event: level x full from `start` s for `minutes` minutes"),
}

SHAPE_NAMES = ", ".join(SHAPES)


def shape_name(text: str) -> str | None:
    """The shape `text` names (`ramp`, `ramp:level=0.4`), or None: then `text` is a file path."""
    name = text.partition(":")[0].strip()
    return name if name in SHAPES else None


def shape_params(text: str, field: str) -> tuple[str, dict[str, float]]:
    """The shape's name and every parameter (defaults filled in), checked without any I/O."""
    name, _, rest = text.partition(":")
    name = name.strip()
    shape = SHAPES[name]
    allowed = dict(shape.defaults)
    params = dict(allowed)
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = (s.strip() for s in item.partition("="))
        if not eq:
            raise UsageError(f"{name}: {item!r} is not KEY=VALUE; allowed keys: {', '.join(allowed)}", field)
        if key not in allowed:
            raise UsageError(f"{name}: unknown parameter {key!r}; allowed: {', '.join(allowed)}", field)
        try:
            v = float(value)
        except ValueError:
            raise UsageError(f"{name}: {key}={value!r} is not a number", field) from None
        params[key] = v
    for key, v in params.items():
        if not math.isfinite(v):
            raise UsageError(f"{name}: {key}={v:g} is not allowed; allowed: a finite number", field)
        if key == "level" and not 0 < v <= 1:
            raise UsageError(f"{name}: level={v:g} is not allowed; allowed: a fraction of --budget in (0, 1]", field)
        if key in ("seconds", "minutes", "every") and v <= 0:
            raise UsageError(f"{name}: {key}={v:g} is not allowed; allowed: a number > 0", field)
        if key in ("start", "hold") and v < 0:
            raise UsageError(f"{name}: {key}={v:g} is not allowed; allowed: a number >= 0 (seconds)", field)
    if name == "ramp" and math.ceil(params["seconds"] / params["every"]) > MAX_STEPS // 2:
        raise UsageError(f"ramp: seconds/every makes more than {MAX_STEPS // 2:,} steps; allowed: a larger every",
                         field)
    return name, params


def shape_steps(text: str, full: float, field: str) -> Steps:
    """The shape `text` names, scaled to `full` (the --budget, W)."""
    name, p = shape_params(text, field)
    low = p["level"] * full
    start = p["start"]
    if name == "step":
        points = [(0.0, full), (start, low), (start + p["seconds"], full)]
    elif name == "demand-response":
        points = [(0.0, full), (start, low), (start + 60.0 * p["minutes"], full)]
    else:
        n = math.ceil(p["seconds"] / p["every"])
        dt = p["seconds"] / n
        up = start + p["seconds"] + p["hold"]
        points = [(0.0, full)]
        points += [(start + k * dt, full - (full - low) * k / n) for k in range(1, n + 1)]
        points += [(up + k * dt, low + (full - low) * k / n) for k in range(1, n + 1)]
    return _normalised(points)


def _normalised(points: list[tuple[float, float]]) -> Steps:
    """Later points at the same time win; a point that changes nothing is dropped."""
    times: list[float] = []
    values: list[float] = []
    for t, v in points:
        if times and t <= times[-1]:
            times.pop()
            values.pop()
        if not values or v != values[-1]:
            times.append(t)
            values.append(v)
    if times[0] != 0.0:
        times[0] = 0.0
    return tuple(times), tuple(values)


def parse_number(text: str) -> float | None:
    """`text` as a number, or None when it is not one (then it names a file)."""
    try:
        return float(text)
    except ValueError:
        return None


def load_steps(path: str | Path, unit: str, field: str, alternatives: str = "") -> Steps:
    """The signal in the CSV file at `path` with header `time_s,<unit>`; `alternatives` says what
    else the flag takes, for the message when the file is missing."""
    p = Path(path)
    allowed = f"a CSV file with header time_s,{unit}{alternatives}"
    if p.is_dir():
        raise UsageError(f"{str(p)!r} is a folder; allowed: {allowed}", field)
    if not p.is_file():
        raise UsageError(f"file {str(p)!r} does not exist; allowed: {allowed}", field)
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{p}: not UTF-8 text (byte {e.start}); allowed: {allowed}", field) from None
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise UsageError(f"{p}: file is empty; allowed: a header line time_s,{unit} and rows TIME,VALUE", field)
    header = [h.strip() for h in rows[0]]
    if header != ["time_s", unit]:
        raise UsageError(f"{p}: row 1: header {','.join(header)!r}; allowed: exactly time_s,{unit}", field)
    times: list[float] = []
    values: list[float] = []
    for n, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        where = f"{p}: row {n}"
        if len(row) != 2:
            raise UsageError(f"{where}: {len(row)} columns; allowed: 2 (time_s,{unit})", field)
        t = _finite(row[0], "time_s", where, field, "a finite number >= 0, seconds")
        v = _finite(row[1], unit, where, field, "a finite number > 0")
        if v <= 0:
            raise UsageError(f"{where}: {unit} {v:g} is not allowed; allowed: a finite number > 0", field)
        if not times and t != 0:
            raise UsageError(f"{where}: the first time is {t:g} s; allowed: 0 (the signal holds from the run's "
                             "start)", field)
        if times and t <= times[-1]:
            raise UsageError(f"{where}: time_s {t:g} is not after the previous row's {times[-1]:g}; allowed: "
                             "times strictly increasing", field)
        if len(times) >= MAX_STEPS:
            raise UsageError(f"{where}: more than {MAX_STEPS:,} rows; allowed: at most {MAX_STEPS:,}", field)
        times.append(t)
        values.append(v)
    if not times:
        raise UsageError(f"{p}: no rows after the header; allowed: rows TIME,VALUE starting at time 0", field)
    return tuple(times), tuple(values)


def _finite(text: str, column: str, where: str, field: str, allowed: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise UsageError(f"{where}: {column} {text.strip()!r} is not a number; allowed: {allowed}", field) from None
    if not math.isfinite(v):
        raise UsageError(f"{where}: {column} {v} is not allowed; allowed: {allowed}", field)
    return v
