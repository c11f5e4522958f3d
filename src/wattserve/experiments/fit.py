"""PALS's offline models: regressors that predict an instance's throughput and its power per GPU from
(GPU, model, TP, EP, power cap, batch limit), fitted to a `wattserve profile` table.

PALS (Hankendi, Shahout, Yu, Coskun, arXiv 2605.21427; its released profiling code) fits scikit-learn
random forests to its cap x batch profile. We fit a random forest and gradient boosting, score both
by K-fold cross-validation (shuffled, seeded; R^2 and MAPE per target, PALS's figures, averaged over
the held-out folds) and keep the one asked for, or with `auto` the one with the lower mean MAPE over
the two targets. The file holds that regressor's predictions on a dense grid (every 5 W between the
profiled caps, at the profiled batches) rather than the fitted trees, so the `pals` controller reads
plain numbers and needs no scikit-learn at run time.

Features: the GPU and model one-hot (the profile names a handful of each), TP, EP, the cap in W and
the batch limit. Targets are fitted in log space: throughput spans two orders of magnitude across
batches and the error that matters (MAPE) is relative.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wattserve.errors import UsageError
from wattserve.schema.profile import FitConfig

FORMAT = "wattserve-pals-models/1"
REGRESSORS = ("random-forest", "gradient-boosting")
KEYS = ("gpu", "model", "tp", "ep", "cap_w", "batch")
TARGETS = {"throughput": "output_tok_s", "power": "power_w"}
GRID_STEP_W = 5.0
"""The cap step of the predicted grid, as fine as a controller usefully sets caps."""


def _sklearn() -> Any:
    try:
        import sklearn
    except ImportError:
        raise UsageError("fitting needs scikit-learn, which is not installed; allowed: pip install "
                         "'wattserve[fit]'") from None
    return sklearn


def read_profile(path: str) -> list[dict[str, Any]]:
    """The rows of a profile table (CSV, or Parquet with pyarrow); each refusal names --profile."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{path!r} is not a file; allowed: a table written by wattserve profile", "profile")
    try:
        if p.suffix.lower() == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise UsageError(f"{path!r}: reading Parquet needs pyarrow, which is not installed; allowed: "
                                 "a .csv profile", "profile") from None
            table = pq.read_table(p).to_pydict()
            cols = list(table)
            raw = [dict(zip(cols, vals)) for vals in zip(*table.values())]
        else:
            import csv

            with p.open(encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f)
                cols = list(reader.fieldnames or [])
                raw = list(reader)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UsageError(f"cannot read {path!r} ({e}); allowed: a table written by wattserve profile",
                         "profile") from None
    missing = [c for c in (*KEYS, *TARGETS.values()) if c not in cols]
    if missing:
        raise UsageError(f"{path!r} has no column {missing[0]!r}; allowed: a table written by wattserve profile "
                         f"(columns {', '.join((*KEYS, *TARGETS.values()))})", "profile")
    rows = []
    for i, r in enumerate(raw, start=2):
        try:
            row = {"gpu": str(r["gpu"]), "model": str(r["model"]), "tp": int(r["tp"]), "ep": int(r["ep"]),
                   "cap_w": float(r["cap_w"]), "batch": int(r["batch"]),
                   "output_tok_s": float(r["output_tok_s"]), "power_w": float(r["power_w"])}
        except (TypeError, ValueError):
            raise UsageError(f"{path!r} line {i}: a value is not a number where one is expected; allowed: a "
                             "table written by wattserve profile", "profile") from None
        if not all(math.isfinite(row[c]) and row[c] > 0 for c in ("cap_w", "output_tok_s", "power_w")):
            raise UsageError(f"{path!r} line {i}: cap_w, output_tok_s and power_w must be finite and > 0",
                             "profile")
        rows.append(row)
    if not rows:
        raise UsageError(f"{path!r} has no rows; allowed: a table written by wattserve profile", "profile")
    return rows


class Encoder:
    """One-hot GPU and model (in sorted order of the names seen), then TP, EP, cap and batch."""

    def __init__(self, rows: Sequence[dict[str, Any]]) -> None:
        self.gpus = sorted({r["gpu"] for r in rows})
        self.models = sorted({r["model"] for r in rows})

    def __call__(self, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        x = np.zeros((len(rows), len(self.gpus) + len(self.models) + 4))
        for i, r in enumerate(rows):
            x[i, self.gpus.index(r["gpu"])] = 1.0
            x[i, len(self.gpus) + self.models.index(r["model"])] = 1.0
            x[i, -4:] = (r["tp"], r["ep"], r["cap_w"], r["batch"])
        return x


def make_regressor(name: str, seed: int) -> Any:
    """A regressor of log(target) whose predictions come back in the target's units; scikit-learn's
    default trees (100 of them; PALS's released code keeps the forest's defaults), seeded and
    single-threaded, so a fit is the same on every run."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

    if name == "random-forest":
        inner: Any = RandomForestRegressor(n_estimators=100, random_state=seed, n_jobs=1)
    else:
        inner = GradientBoostingRegressor(n_estimators=100, random_state=seed)
    return TransformedTargetRegressor(regressor=inner, func=np.log, inverse_func=np.exp)


def cross_validate(x: np.ndarray, y: dict[str, np.ndarray], folds: int, seed: int) -> dict[str, Any]:
    """R^2 and MAPE (a fraction, not percent) of each regressor and target, averaged over the held-out
    folds of one shuffled, seeded K-fold split."""
    from sklearn.metrics import mean_absolute_percentage_error, r2_score
    from sklearn.model_selection import KFold

    splits = list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(x))
    out: dict[str, Any] = {}
    for name in REGRESSORS:
        out[name] = {}
        for target, ys in y.items():
            r2, mape = [], []
            for train, test in splits:
                model = make_regressor(name, seed).fit(x[train], ys[train])
                pred = model.predict(x[test])
                r2.append(r2_score(ys[test], pred))
                mape.append(mean_absolute_percentage_error(ys[test], pred))
            out[name][target] = {"r2": round(float(np.mean(r2)), 6), "mape": round(float(np.mean(mape)), 6)}
    return out


def pick(cv: dict[str, Any], asked: str) -> str:
    if asked != "auto":
        return asked
    return min(REGRESSORS, key=lambda n: (np.mean([cv[n][t]["mape"] for t in TARGETS]), REGRESSORS.index(n)))


def dense_groups(rows: Sequence[dict[str, Any]], enc: Encoder, models: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (GPU, model, TP, EP) in the profile, the predictions on caps every GRID_STEP_W from the
    profiled minimum to maximum (the maximum included) at the profiled batches."""
    groups = []
    for key in sorted({(r["gpu"], r["model"], r["tp"], r["ep"]) for r in rows}):
        mine = [r for r in rows if (r["gpu"], r["model"], r["tp"], r["ep"]) == key]
        lo, hi = min(r["cap_w"] for r in mine), max(r["cap_w"] for r in mine)
        n = int((hi - lo) / GRID_STEP_W + 1e-9)
        caps = sorted({*(round(lo + i * GRID_STEP_W, 6) for i in range(n + 1)), hi})
        batches = sorted({r["batch"] for r in mine})
        gpu, model, tp, ep = key
        pts = [{"gpu": gpu, "model": model, "tp": tp, "ep": ep, "cap_w": c, "batch": b} for c in caps for b in batches]
        x = enc(pts)
        pred = {t: models[t].predict(x).reshape(len(caps), len(batches)) for t in TARGETS}
        groups.append({"gpu": gpu, "model": model, "tp": tp, "ep": ep, "caps_w": [float(c) for c in caps],
                       "batches": batches,
                       "tok_s": [[round(float(v), 3) for v in row] for row in pred["throughput"]],
                       "power_w": [[round(float(v), 3) for v in row] for row in pred["power"]]})
    return groups


def check_out(path: str, kind: str = "a file path") -> None:
    """Refuse, before any work, an output that could not be written: a folder, a missing or read-only
    folder, a read-only file."""
    out = Path(path)
    folder = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise UsageError(f"{path!r} is a folder; allowed: {kind}", "out")
    if not folder.is_dir():
        raise UsageError(f"{str(folder)!r} is not a folder; allowed: a path in an existing folder", "out")
    if not os.access(folder, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(f"{path!r} is not writable; allowed: a path in a writable folder", "out")


def fit(cfg: FitConfig) -> dict[str, Any]:
    """The models document (FORMAT) for `cfg.profile`; nothing is written here."""
    assert cfg.profile is not None
    _sklearn()
    rows = read_profile(cfg.profile)
    if len(rows) < 4:
        raise UsageError(f"{cfg.profile!r} has {len(rows)} rows; allowed: a profile of at least 4 points (two "
                         "held-out folds of two)", "profile")
    if len(rows) < 2 * cfg.folds:
        raise UsageError(f"{cfg.folds} folds of at least 2 rows (R^2 needs two) need {2 * cfg.folds} rows and the "
                         f"profile has {len(rows)}; allowed: 2 to {len(rows) // 2}", "folds")
    enc = Encoder(rows)
    x = enc(rows)
    y = {t: np.array([r[c] for r in rows]) for t, c in TARGETS.items()}
    cv = cross_validate(x, y, cfg.folds, cfg.seed)
    chosen = pick(cv, cfg.regressor)
    models = {t: make_regressor(chosen, cfg.seed).fit(x, ys) for t, ys in y.items()}
    return {"format": FORMAT, "profile": cfg.profile, "rows": len(rows), "regressor": chosen, "cv": cv,
            "groups": dense_groups(rows, enc, models)}


def write_models(doc: dict[str, Any], path: str) -> None:
    """The JSON file (one line per group, so that a diff shows which group moved), written to a hidden
    sibling and moved in whole."""
    head = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in doc.items() if k != "groups"]
    groups = ",\n".join(f"  {json.dumps(g)}" for g in doc["groups"])
    out = Path(path)
    tmp = out.with_name(f".{out.name}.partial")
    try:
        tmp.write_text("{\n" + ",\n".join(head) + ',\n "groups": [\n' + groups + "\n ]\n}\n", encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
