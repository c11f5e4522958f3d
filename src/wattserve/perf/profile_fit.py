"""Fit a perf profile's latency constants to a measured iteration table (`wattserve calibrate --profile`).

What is fitted: the roofline's efficiencies (GEMM, weight streaming, KV reads, attention), its fixed
costs (per step, per sequence, per layer, per all-reduce when the table has TP > 1 rows, and per
mixed step when it has steps of prompt chunks beside decodes), and, when the table has prompt chunks
longer than a token, the share of their masked pairs the engine's attention computes
(perf/latency.py, attn_masked_share), by
robust least squares on relative error (scipy.optimize.least_squares, soft-L1 loss, so one noisy
row does not pull the fit). The GEMM soft-maximum exponent and the power constants stay those of the
base profile: a latency table says nothing about power unless it has a `watts` column, and ours do
not (a CPU has no power counter we read).

A fraction of the rows (seeded) is held out of the fit and the error is reported on them apart:
the error a user should expect on shapes the profile was not fitted to. Each kind of step (prefill,
decode, mixed) weighs as much in the fit as the others however many rows it has.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from wattserve.catalog.gpus import get_gpu
from wattserve.catalog.models import get_model
from wattserve.errors import UsageError
from wattserve.perf.iteration_table import IterationRow
from wattserve.perf.perf_profile import PerfProfile

EFFICIENCIES = ("eff_gemm", "eff_mem", "eff_kv", "eff_attn")
OVERHEADS = ("step_overhead_s", "seq_overhead_s", "prompt_overhead_s", "layer_overhead_s")
_EFF_BOUNDS = (1e-4, 1.0)
NOMINAL_EFF_MAX = 100.0
"""Efficiencies are fractions of a GPU's datasheet peak, so at most 1; the catalog's `cpu` device is
nominal, so a CPU table's efficiencies may exceed 1 (up to this)."""
_OVERHEAD_BOUNDS = (0.0, 1.0)
SHARES = ("attn_masked_share",)
_SHARE_START = 0.5
"""Where a share the base profile leaves at 0 starts (mid-range: 0 is a bound, where the fit would start
with no room on one side)."""
START_SCALES = (1.0, 0.1, 0.01)
"""The fit starts from the base efficiencies and from 10x and 100x lower ones and keeps the best: a
roofline term that never binds from one start (a decode step that looks compute-bound, so the
KV-read efficiency has no gradient) binds from another. Slow devices such as a CPU sit far below
a GPU's efficiencies."""
PRIOR_WEIGHT = 0.01
"""A weak pull of each efficiency towards the base profile's (log scale): a table that cannot tell
two efficiencies apart (a CPU run dominated by fixed costs) leaves them near the base values instead
of trading one against the other without bound. At 0.01 it costs as much as a 1% error on one row
for a factor e in one efficiency."""


@dataclass(frozen=True)
class RowError:
    row: IterationRow
    predicted_ms: float
    held_out: bool

    @property
    def rel_error(self) -> float:
        return (self.predicted_ms - self.row.iter_ms) / self.row.iter_ms


@dataclass(frozen=True)
class FitResult:
    profile: PerfProfile
    errors: list[RowError]

    def median_abs(self, held_out: bool, kind: str | None = None) -> float:
        errs = [abs(e.rel_error) for e in self.errors
                if e.held_out == held_out and (kind is None or e.row.kind == kind)]
        return statistics.median(errs) if errs else math.nan

    def table(self) -> str:
        """The held-out error table `calibrate` prints (markdown)."""
        lines = ["| rows | kind | count | median abs error | max abs error |", "|---|---|---|---|---|"]
        for held in (False, True):
            for kind in (None, "prefill", "decode", "mixed"):
                errs = [abs(e.rel_error) for e in self.errors
                        if e.held_out == held and (kind is None or e.row.kind == kind)]
                if errs:
                    lines.append(f"| {'held out' if held else 'fitted'} | {kind or 'all'} | {len(errs)} "
                                 f"| {statistics.median(errs):.1%} | {max(errs):.1%} |")
        return "\n".join(lines)


def predict_ms(profile: PerfProfile, row: IterationRow) -> float:
    return float(predict_all(profile, [row])[0])


def predict_all(profile: PerfProfile, rows: Sequence[IterationRow]) -> np.ndarray:
    """Predicted ms of every row; one latency model per (device, model, TP), as a fit calls this
    for every trial of its constants over tables of thousands of rows (serving step logs)."""
    models: dict[tuple[str, str, int], tuple[object, float]] = {}
    out = np.empty(len(rows))
    for i, r in enumerate(rows):
        key = (r.device, r.model, r.tp)
        if key not in models:
            gpu = get_gpu(r.device)
            models[key] = (profile.latency_model(gpu, get_model(r.model), r.tp), gpu.clock_max_mhz)
        lat, top = models[key]
        out[i] = lat.iteration(r.shape, r.clock_mhz or top).time_s * 1e3  # type: ignore[attr-defined]
    return out


def split(rows: Sequence[IterationRow], holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of fitted and held-out rows; at least one row on each side when holdout > 0."""
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    n_out = min(len(rows) - 1, max(1, round(holdout * len(rows)))) if holdout > 0 else 0
    return sorted(idx[n_out:]), sorted(idx[:n_out])


def fit_latency(base: PerfProfile, names: Sequence[str], predict: Callable[[PerfProfile], np.ndarray],
                measured: np.ndarray, eff_max: float = _EFF_BOUNDS[1], weights: np.ndarray | None = None
                ) -> PerfProfile:
    """`base` with the latency constants `names` fitted so that predict(profile) matches `measured`
    (relative error times `weights`, soft-L1, a weak prior on the efficiencies)."""
    w = np.ones(len(measured)) if weights is None else weights
    from scipy.optimize import least_squares

    lo = [_EFF_BOUNDS[0] if n.startswith("eff") else _OVERHEAD_BOUNDS[0] for n in names]
    hi = [eff_max if n.startswith("eff") else _OVERHEAD_BOUNDS[1] for n in names]
    start = base.latency
    x0 = np.array([min(max(getattr(start, n) or (_SHARE_START if n in SHARES else 0.0), a), b)
                   for n, a, b in zip(names, lo, hi, strict=True)])
    scale = np.array([1.0 if n.startswith("eff") or n in SHARES else 1e-4 for n in names])
    eff = np.array([n.startswith("eff") for n in names])

    def profile_of(x: np.ndarray) -> PerfProfile:
        return replace(base, latency=replace(start, **{n: float(v) for n, v in zip(names, x, strict=True)}))

    def residuals(x: np.ndarray) -> np.ndarray:
        prior = PRIOR_WEIGHT * np.log(x[eff] / x0[eff])
        return np.concatenate([w * (predict(profile_of(x)) / measured - 1.0), prior])

    best = None
    for k in START_SCALES:
        start_x = np.where(eff, np.clip(x0 * k, lo, hi), x0)
        res = least_squares(residuals, start_x, bounds=(lo, hi), x_scale=scale, loss="soft_l1", f_scale=0.05,
                            diff_step=1e-3)
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    return profile_of(best.x)


def _weights(rows: Sequence[IterationRow]) -> np.ndarray:
    """Each kind of step (prefill, decode, mixed) weighs as much as the others however many rows it
    has: a serving log holds far more decode steps than prompt steps, and TTFT rests on the few.
    Weighing binned rows by the time they stand for (`count` x `iter_ms`) was tried: it brought the
    simulated capacity of our CPU server closer (30 against 25 req/s measured, from 45) but doubled
    the error below saturation (docs/calibration.md, known limits)."""
    kinds = [r.kind for r in rows]
    counts = {k: kinds.count(k) for k in set(kinds)}
    return np.array([math.sqrt(len(rows) / (len(counts) * counts[k])) for k in kinds])


def fit_profile(rows: Sequence[IterationRow], base: PerfProfile, name: str, source: str,
                holdout: float = 0.2, seed: int = 0) -> FitResult:
    try:
        import scipy.optimize  # noqa: F401
    except ImportError:
        raise UsageError("fitting a profile needs scipy; allowed: install it with pip install 'wattserve[fit]'",
                         "profile") from None
    for r in rows:
        for what, check in (("device", get_gpu), ("model", get_model)):
            try:
                check(getattr(r, what))
            except UsageError as e:
                raise UsageError(f"a row's {what}: {e.detail}", "profile") from None
    fit_idx, out_idx = split(rows, holdout, seed)
    if len(fit_idx) < 4:
        raise UsageError(f"{len(rows)} rows leave {len(fit_idx)} to fit; allowed: a table with at least "
                         f"{math.ceil(4 / (1 - holdout))} rows", "profile")
    names = (EFFICIENCIES + OVERHEADS + (("comm_overhead_s",) if any(r.tp > 1 for r in rows) else ())
             + (("mixed_overhead_s",) if any(r.kind == "mixed" for r in rows) else ())
             + (SHARES if any(r.shape.prefill_masked_pairs for r in rows) else ()))
    fitted = [rows[i] for i in fit_idx]
    weights = _weights(fitted)
    profile = fit_latency(base, names, lambda p: predict_all(p, fitted), np.array([r.iter_ms for r in fitted]),
                          NOMINAL_EFF_MAX if any(r.device == "cpu" for r in rows) else _EFF_BOUNDS[1], weights)
    engines = sorted({r.engine for r in rows if r.engine})
    profile = replace(profile, name=name, engine=", ".join(engines) or base.engine, source=source,
                      fitted_on=tuple(sorted({r.device for r in rows})))
    held = set(out_idx)
    errors = [RowError(r, float(ms), i in held) for i, (r, ms) in enumerate(zip(rows, predict_all(profile, rows),
                                                                                strict=True))]
    result = FitResult(profile, errors)
    fit_error = {"fitted_median_abs": result.median_abs(False)}
    if out_idx:
        fit_error["held_out_median_abs"] = result.median_abs(True)
    return FitResult(replace(profile, fit_error={k: round(v, 4) for k, v in fit_error.items()}), errors)
