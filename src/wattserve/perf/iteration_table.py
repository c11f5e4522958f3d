"""Measured iteration latencies as a tidy table: what `wattserve profile --kind iterations` writes and
`wattserve calibrate --profile` fits.

The format is a plain CSV that any engine's logs can be turned into (docs/calibration.md). One row per
measured batch shape; columns:

- `engine`, `device`, `model`, `tp`: what was measured (`device` a catalog GPU name, or `cpu`; `model`
  a catalog model name);
- `prefill_tokens`, `prefill_seqs`, `prefill_ctx`: prompt tokens computed in the iteration, the
  prompts that complete in it (each gets a logit; a chunk that leaves part of its prompt for later
  counts 0), and the KV already cached before them (0 for whole prompts);
- `decode_seqs`, `decode_ctx`: sequences decoding one token each and their total context;
- `clock_mhz` (optional, empty: the device's maximum), `iter_ms` (the measured median, or one step's
  time in a serving log), `watts` (optional, the mean power per GPU while the shape ran),
  `prefill_attn_pairs` (optional: the causal query-key pairs, sum of chunk * (context before +
  (chunk + 1) / 2); empty: derived from the other columns as if the prefill sequences were equal,
  which is how grid profiles are taken), `prefill_masked_pairs` (optional: the pairs above each
  chunk's causal diagonal, sum of chunk * (chunk - 1) / 2; empty: derived the same way),
  `count` (optional: how many steps the row averages, as `binned` writes).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from wattserve.catalog.models import BatchShape
from wattserve.errors import UsageError

REQUIRED = ("engine", "device", "model", "tp", "prefill_tokens", "prefill_seqs", "prefill_ctx", "decode_seqs",
            "decode_ctx", "iter_ms")
OPTIONAL = ("clock_mhz", "watts", "prefill_attn_pairs", "count", "prefill_masked_pairs")


@dataclass(frozen=True)
class IterationRow:
    engine: str
    device: str
    model: str
    tp: int
    prefill_tokens: int
    prefill_seqs: int
    prefill_ctx: int
    decode_seqs: int
    decode_ctx: int
    iter_ms: float
    clock_mhz: float | None = None
    watts: float | None = None
    prefill_attn_pairs: float | None = None
    count: int | None = None
    prefill_masked_pairs: float | None = None

    @property
    def shape(self) -> BatchShape:
        chunks, per, before = ((self.prefill_seqs, self.prefill_tokens // self.prefill_seqs,
                                self.prefill_ctx // self.prefill_seqs) if self.prefill_seqs
                               else (1, self.prefill_tokens, self.prefill_ctx))
        pairs = self.prefill_attn_pairs
        if pairs is None:
            pairs = chunks * per * (before + (per + 1) / 2)
        masked = self.prefill_masked_pairs
        if masked is None:
            masked = chunks * per * (per - 1) / 2 if per else 0.0
        return BatchShape(self.prefill_tokens, self.prefill_seqs, pairs, self.prefill_ctx, self.decode_seqs,
                          self.decode_ctx, masked)

    @property
    def kind(self) -> str:
        """'prefill', 'decode' or 'mixed': how held-out errors are grouped."""
        if self.prefill_tokens and self.decode_seqs:
            return "mixed"
        return "prefill" if self.prefill_tokens else "decode"


def write_rows(rows: Iterable[IterationRow], path: str | Path) -> None:
    names = [f.name for f in fields(IterationRow)]
    with Path(path).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=names)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})


def read_rows(path: str | Path, field: str = "profile") -> list[IterationRow]:
    """The rows of a table, or one UsageError naming the file, the row and the column at fault."""
    p = Path(path)
    try:
        with p.open(newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise UsageError(f"{str(path)!r} lacks column(s) {', '.join(missing)}; allowed: a CSV with "
                                 f"columns {', '.join(REQUIRED)} (optional {', '.join(OPTIONAL)})", field)
            rows = [_row(r, i + 2, str(path), field) for i, r in enumerate(reader)]
    except OSError as e:
        raise UsageError(f"cannot read {str(path)!r} ({e.strerror})", field) from None
    except UnicodeDecodeError:
        raise UsageError(f"{str(path)!r} is not a text CSV; allowed: a CSV with columns "
                         f"{', '.join(REQUIRED)}", field) from None
    if not rows:
        raise UsageError(f"{str(path)!r} has no rows; allowed: a CSV with at least one measured shape", field)
    return rows


def _row(r: dict[str, str | None], line: int, path: str, field: str) -> IterationRow:
    def num(name: str, kind: type, optional: bool = False, positive: bool = False) -> float | int | None:
        text = (r.get(name) or "").strip()
        if not text and optional:
            return None
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        bad_int = kind is int and math.isfinite(v) and v != int(v)
        if not math.isfinite(v) or v < 0 or (positive and v <= 0) or bad_int:
            allowed = "an integer" if kind is int else "a number"
            raise UsageError(f"{path} line {line}: {name}={text!r} is not allowed; allowed: {allowed} "
                             f"{'> 0' if positive else '>= 0'}", field)
        v = int(v) if kind is int else v
        return v

    row = IterationRow(
        engine=(r.get("engine") or "").strip(), device=(r.get("device") or "").strip(),
        model=(r.get("model") or "").strip(), tp=int(num("tp", int, positive=True) or 1),
        prefill_tokens=int(num("prefill_tokens", int) or 0), prefill_seqs=int(num("prefill_seqs", int) or 0),
        prefill_ctx=int(num("prefill_ctx", int) or 0), decode_seqs=int(num("decode_seqs", int) or 0),
        decode_ctx=int(num("decode_ctx", int) or 0), iter_ms=float(num("iter_ms", float, positive=True) or 0),
        clock_mhz=num("clock_mhz", float, optional=True, positive=True),
        watts=num("watts", float, optional=True, positive=True),
        prefill_attn_pairs=num("prefill_attn_pairs", float, optional=True),
        count=num("count", int, optional=True, positive=True),  # type: ignore[arg-type]
        prefill_masked_pairs=num("prefill_masked_pairs", float, optional=True),
    )
    if row.prefill_tokens + row.decode_seqs == 0:
        raise UsageError(f"{path} line {line}: the row computes no tokens; allowed: prefill_tokens > 0 or "
                         "decode_seqs > 0", field)
    if row.prefill_seqs > row.prefill_tokens:
        raise UsageError(f"{path} line {line}: prefill_seqs={row.prefill_seqs} with prefill_tokens="
                         f"{row.prefill_tokens}; allowed: prefill_seqs <= prefill_tokens", field)
    return row


def _bucket(n: float) -> int:
    """0, then powers of two: 1, 2, 3-4, 5-8, ... (log-spaced, as step costs vary smoothly in scale)."""
    return 0 if n <= 0 else max(0, math.ceil(math.log2(n))) + 1


def bin_key(r: IterationRow) -> tuple:
    """The shape bin a step falls in (`binned`)."""
    per_ctx = r.decode_ctx / r.decode_seqs if r.decode_seqs else 0
    return (r.engine, r.device, r.model, r.tp, r.decode_seqs, _bucket(r.prefill_tokens), _bucket(r.prefill_seqs),
            _bucket(r.prefill_ctx), _bucket(per_ctx))


def binned(rows: Iterable[IterationRow]) -> list[IterationRow]:
    """Rows of similar shape averaged into one: for serving step logs, whose single steps scatter
    (a step that shares the cores with the router's work, a garbage collection) around the mean that
    sums to the run's time. Bins: the (engine, device, model, TP), the decode batch exactly, and
    log-spaced buckets of prefill tokens, completing prompts and per-sequence context. Each bin's row
    is the mean of its shapes and of its times, so a fit to bins prices mean steps, not median ones."""
    groups: dict[tuple, list[IterationRow]] = {}
    for r in rows:
        groups.setdefault(bin_key(r), []).append(r)
    out = []
    for (engine, device, model, tp, dseqs, *_), g in groups.items():
        n = len(g)

        def mean(attr: str, g: list[IterationRow] = g, n: int = n) -> float:
            return sum(getattr(r, attr) for r in g) / n

        pairs = sum(r.shape.prefill_attn_pairs for r in g) / n
        masked = sum(r.shape.prefill_masked_pairs for r in g) / n
        pt = round(mean("prefill_tokens"))
        out.append(IterationRow(engine, device, model, tp, pt, min(pt, round(mean("prefill_seqs"))),
                                round(mean("prefill_ctx")), dseqs, round(mean("decode_ctx")), mean("iter_ms"),
                                prefill_attn_pairs=pairs if pt else None, count=n,
                                prefill_masked_pairs=masked if pt else None))
    return sorted(out, key=lambda r: (r.device, r.model, r.tp, r.prefill_tokens, r.decode_seqs, r.decode_ctx))
