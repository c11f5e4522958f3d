"""How steady a host ran its serving steps: the spread the simulator's step model leaves out.

Reads the step logs and fitted serving profiles a `wattserve validate --out DIR` run leaves in DIR and
prints, per worker log (every profiling load together):
- steps, and the token-weighted mean step time (each decode step counted once per sequence it
  advanced: the mean TPOT the worker's own steps give, before the router and the client);
- quantiles of each step's measured time over the layout's fitted profile's prediction;
- the autocorrelation of log(step / its shape bin's mean) at lags of 1-50 steps, in log order: near 0
  is step-to-step noise, which a request's TPOT averages away; near 1 is a slow drift of the host's
  speed, which it does not.
docs/calibration.md's known limits quote its output.

Usage: python scripts/step_spread.py runs/validate
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from wattserve.perf.iteration_table import IterationRow, bin_key, read_rows
from wattserve.perf.perf_profile import load_profile
from wattserve.perf.profile_fit import predict_all

QUANTILES = (0.1, 0.5, 0.9, 0.99)
LAGS = (1, 2, 5, 10, 20, 50)


def spread(rows: list[IterationRow]) -> tuple[float, list[float]]:
    """(std of log(step / bin mean), autocorrelation of that at LAGS)."""
    keys = [bin_key(r) for r in rows]
    groups: dict[tuple, list[float]] = {}
    for k, r in zip(keys, rows, strict=True):
        groups.setdefault(k, []).append(r.iter_ms)
    means = {k: float(np.mean(v)) for k, v in groups.items()}
    x = np.log(np.array([r.iter_ms / means[k] for k, r in zip(keys, rows, strict=True)]))
    x -= x.mean()
    ac = [float(np.corrcoef(x[:-lag], x[lag:])[0, 1]) if len(x) > lag + 2 else float("nan") for lag in LAGS]
    return float(x.std()), ac


def main(run: Path) -> None:
    for layout_dir in sorted(p for p in (run / "steps").iterdir() if p.is_dir()):
        logs: dict[str, list[IterationRow]] = {}
        for f in sorted(layout_dir.glob("load*/*.csv")):
            logs.setdefault(f.stem.rsplit("-", 1)[-1], []).extend(read_rows(f, "step_log"))
        for role, rows in logs.items():
            label = layout_dir.name if role == "colocated" else f"{layout_dir.name}-{role}"
            profile = load_profile(str(run / f"profile-{label}.json"))
            ms = np.array([r.iter_ms for r in rows])
            ratio = ms / predict_all(profile, rows)
            seqs = np.array([r.decode_seqs for r in rows])
            weighted = float((ms * seqs).sum() / seqs.sum()) if seqs.sum() else float("nan")
            sd, ac = spread(rows)
            q = " ".join(f"p{round(p * 100)} {v:.2f}" for p, v in zip(QUANTILES, np.quantile(ratio, QUANTILES),
                                                                     strict=True))
            print(f"{label}: {len(rows)} steps, token-weighted step {weighted:.3f} ms; measured/predicted {q}; "
                  f"log spread {sd:.3f}, autocorrelation at lags {', '.join(map(str, LAGS))}: "
                  f"{', '.join(f'{a:.2f}' for a in ac)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/step_spread.py VALIDATE_OUT_DIR")
    main(Path(sys.argv[1]))
