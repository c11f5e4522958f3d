"""Trace loaders: the Azure LLM inference trace (2023 CSV) and Mooncake JSONL.

Azure (Patel et al., Splitwise, ISCA 2024; github.com/Azure/AzurePublicDataset):
  TIMESTAMP,ContextTokens,GeneratedTokens with timestamps like `2023-11-16 18:15:46.6805900`
  (7 fractional digits, which datetime.fromisoformat rejects on Python < 3.11).
Mooncake (Qin et al., FAST 2025; github.com/kvcache-ai/Mooncake FAST25-release/traces):
  one JSON object per line with timestamp (ms), input_length, output_length.
Malformed input is a UsageError on `workload.trace` naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np

from wattserve.errors import UsageError
from wattserve.workload.workload import Workload

FORMATS = ("azure", "mooncake")
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
TRACE = "workload.trace"
"""The scenario field every trace error is on."""


def _positive_int(value: str, where: str, field: str, minimum: int = 1) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: {field} {value!r} is not an integer") from None
    if v < minimum:
        raise UsageError(f"{where}: {field} {v} must be >= {minimum}")
    return v


def _timestamp_ms(value: object, where: str) -> float:
    """A Mooncake timestamp, ms. JSON parsers accept NaN and Infinity, which would sort anywhere and
    overflow the arrival arithmetic, so they are refused here with the line that holds them."""
    if isinstance(value, bool):
        raise UsageError(f"{where}: timestamp {value!r} is not a number (ms)")
    try:
        t = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(f"{where}: timestamp {value!r} is not a number (ms)") from None
    if t != t:
        raise UsageError(f"{where}: timestamp is not a number (NaN)")
    if not math.isfinite(t):
        raise UsageError(f"{where}: timestamp {t} is not finite")
    return t


def _parse_azure_time(s: str, where: str) -> float:
    s = s.strip()
    if "." in s:
        head, frac = s.split(".", 1)
        s = f"{head}.{frac[:6]}"
    try:
        return datetime.fromisoformat(s).timestamp()
    except ValueError:
        raise UsageError(f"{where}: TIMESTAMP {s!r} is not a date-time like 2023-11-16 18:15:46.680590") from None


def load_azure(path: Path) -> Workload:
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise UsageError(f"{path}: file is empty")
        header = [h.strip() for h in header]
        missing = [c for c in AZURE_COLUMNS if c not in header]
        if missing:
            raise UsageError(f"{path}: missing column(s) {', '.join(missing)}; "
                             f"the Azure format needs {', '.join(AZURE_COLUMNS)}")
        it, ic, ig = (header.index(c) for c in AZURE_COLUMNS)
        ts: list[float] = []
        ctx: list[int] = []
        gen: list[int] = []
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            where = f"{path} line {lineno}"
            if len(row) < len(header):
                raise UsageError(f"{where}: expected {len(header)} fields, found {len(row)}")
            ts.append(_parse_azure_time(row[it], where))
            ctx.append(_positive_int(row[ic], where, "ContextTokens"))
            gen.append(_positive_int(row[ig], where, "GeneratedTokens"))
    return _finish(path, np.array(ts), ctx, gen)


def load_mooncake(path: Path) -> Workload:
    ts: list[float] = []
    ctx: list[int] = []
    gen: list[int] = []
    with path.open() as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} line {lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise UsageError(f"{where}: expected a JSON object with timestamp, input_length, output_length")
            for k in ("timestamp", "input_length", "output_length"):
                if k not in obj:
                    raise UsageError(f"{where}: missing field {k!r}; the Mooncake format needs "
                                     "timestamp, input_length, output_length")
            ts.append(_timestamp_ms(obj["timestamp"], where) / 1000.0)
            ctx.append(_positive_int(obj["input_length"], where, "input_length"))
            gen.append(_positive_int(obj["output_length"], where, "output_length"))
    return _finish(path, np.array(ts), ctx, gen)


def _finish(path: Path, ts: np.ndarray, ctx: list[int], gen: list[int]) -> Workload:
    if len(ts) == 0:
        raise UsageError(f"{path}: no requests")
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    return Workload(ts - ts[0], np.asarray(ctx, dtype=np.int64)[order], np.asarray(gen, dtype=np.int64)[order],
                    name=path.stem)


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "azure"
    if suffix in (".jsonl", ".json"):
        return "mooncake"
    raise UsageError(f"{path}: cannot tell the format from the extension {suffix!r}; give "
                     f"--trace-format (workload.trace_format in a config), one of: {', '.join(FORMATS)}", TRACE)


def load_trace(path: str | Path, fmt: str | None = None) -> Workload:
    """The trace at `path`; every error is on the field `workload.trace` (`workload.trace_format` for
    an unknown format), which the command line names as --trace."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{str(p)!r} is a folder, not a trace file", TRACE)
    if not p.is_file():
        raise UsageError(f"file {str(p)!r} does not exist", TRACE)
    fmt = fmt or detect_format(p)
    loaders = {"azure": load_azure, "mooncake": load_mooncake}
    if fmt not in loaders:
        raise UsageError(f"unknown value {fmt!r}; allowed: {', '.join(FORMATS)}", "workload.trace_format")
    kind = "CSV" if fmt == "azure" else "JSONL"
    try:
        return loaders[fmt](p)
    except UsageError as e:
        raise UsageError(e.detail, e.field or TRACE) from None
    except UnicodeDecodeError as e:
        raise UsageError(f"file {str(p)!r} is not UTF-8 text (byte {e.start}); expected an {fmt} trace ({kind})",
                         TRACE) from None
    except csv.Error as e:
        raise UsageError(f"file {str(p)!r} is not a readable CSV ({e}); expected an Azure trace", TRACE) from None
    except OSError as e:
        raise UsageError(f"cannot read {str(p)!r} ({e.strerror})", TRACE) from None
