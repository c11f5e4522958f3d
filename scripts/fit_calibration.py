"""Fit the latency overhead and the H100 power constants to the calibration targets.

Run: python scripts/fit_calibration.py --data ../shared/data
Prints the fitted constants; perf/latency.py and perf/power.py carry them and cite this script.
Needs scipy (the `dev` extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from wattserve.catalog import get_gpu
from wattserve.perf import UtilizationPowerModel
from wattserve.perf import calibration as cal
from wattserve.perf import latency as lat_mod
from wattserve.perf import power as pow_mod

SPLITWISE_WEIGHT = 3.0
NAMES = ("OVERHEAD_S", "H100_BUSY_W", "H100_COMPUTE_W", "H100_MEMORY_W", "H100_GAMMA")


def residuals(x: np.ndarray, data: Path) -> np.ndarray:
    overhead, busy, comp, mem, gamma = (float(v) for v in x)
    pw = UtilizationPowerModel(get_gpu("h100"), busy, comp, mem, gamma)
    r = [p.rel_error for p in cal.mlenergy_points(data, pw, overhead)]
    r += [SPLITWISE_WEIGHT * p.rel_error for p in cal.splitwise_points(pw, overhead)]
    return np.array(r)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    a = ap.parse_args()
    x0 = np.array([lat_mod.OVERHEAD_S, pow_mod.H100_BUSY_W, pow_mod.H100_COMPUTE_W, pow_mod.H100_MEMORY_W,
                   pow_mod.H100_GAMMA])
    fit = least_squares(residuals, x0, args=(a.data,), bounds=([0, 0, 100, 50, 1.0], [5e-3, 300, 900, 600, 4.0]),
                        loss="soft_l1", f_scale=0.1, diff_step=1e-3)
    for n, v in zip(NAMES, fit.x):
        print(f"{n} = {v:.4g}")
    print("median |rel err| before:", float(np.median(np.abs(residuals(x0, a.data)))),
          "after:", float(np.median(np.abs(residuals(fit.x, a.data)))))


if __name__ == "__main__":
    main()
