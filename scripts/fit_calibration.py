"""Fit the default perf profile's constants to the public calibration targets.

Run: python scripts/fit_calibration.py --data ../shared/data [--terms] [--out FILE]
     python scripts/fit_calibration.py --data ../shared/data --v2 --out FILE
Targets: ML.ENERGY v3 median ITL and power per GPU on H100 (three models, TP 1 and 4), Vidur's H100
layer times, Splitwise's power anchors (perf/calibration.py says what each is). Without --terms it
fits what the model had before perf profiles (the per-step overhead and the power constants); with
--terms it also fits the terms perf profiles added (KV-read efficiency, per-sequence, per-layer and
per-all-reduce costs). Prints the constants and the median errors before and after; with --out,
writes the profile JSON (src/wattserve/data/perf_profiles/default.json is one). With --v2 it fits
the latency constants (efficiencies and all fixed costs) to ML.ENERGY v2's TPOT on A100-40GB and H100
(an older vLLM; perf/calibration.py mlenergy_v2_points), holding out every third point
(src/wattserve/data/perf_profiles/mlenergy-v2-vllm.json).
Needs scipy (the `fit` extra).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from wattserve.perf import calibration as cal
from wattserve.perf.perf_profile import PerfProfile, load_profile, write_profile
from wattserve.perf.profile_fit import EFFICIENCIES, OVERHEADS, fit_latency

SPLITWISE_WEIGHT = 3.0
POWER = ("busy_w", "compute_w", "memory_w", "gamma")
BASE_LATENCY = ("step_overhead_s",)
TERMS = ("eff_kv", "seq_overhead_s", "layer_overhead_s", "comm_overhead_s")
BOUNDS = {"step_overhead_s": (0, 5e-3), "busy_w": (0, 300), "compute_w": (100, 900), "memory_w": (50, 600),
          "gamma": (1.0, 4.0), "eff_kv": (0.3, 1.0), "seq_overhead_s": (0, 1e-4), "layer_overhead_s": (0, 1e-4),
          "comm_overhead_s": (0, 1e-4)}


def profile_of(base: PerfProfile, names: tuple[str, ...], x: np.ndarray) -> PerfProfile:
    lat = {n: float(v) for n, v in zip(names, x, strict=True) if n not in POWER}
    pw = {n: float(v) for n, v in zip(names, x, strict=True) if n in POWER}
    return replace(base, latency=replace(base.latency, **lat), power=replace(base.power, **pw))


def residuals(x: np.ndarray, names: tuple[str, ...], base: PerfProfile, data: Path) -> np.ndarray:
    p = profile_of(base, names, x)
    r = [q.rel_error for q in cal.mlenergy_points(data, p)]
    r += [SPLITWISE_WEIGHT * q.rel_error for q in cal.splitwise_points(p)]
    return np.array(r)


def fit_v2(data: Path, out: Path | None) -> None:
    base = load_profile("default")
    pts = cal.mlenergy_v2_points(data, base)
    held = set(range(2, len(pts), 3))
    fit_i = [i for i in range(len(pts)) if i not in held]

    def predict(p: PerfProfile) -> np.ndarray:
        now = cal.mlenergy_v2_points(data, p)
        return np.array([now[i].predicted for i in fit_i])

    names = EFFICIENCIES + OVERHEADS + ("comm_overhead_s",)
    prof = fit_latency(base, names, predict, np.array([pts[i].measured for i in fit_i]))
    now = cal.mlenergy_v2_points(data, prof)
    errs = {"fitted": [abs(now[i].rel_error) for i in fit_i], "held_out": [abs(now[i].rel_error) for i in held]}
    for k, v in errs.items():
        print(f"{k}: {len(v)} points, median abs error {np.median(v):.1%}, max {max(v):.1%}")
    for n in names:
        print(f"{n} = {getattr(prof.latency, n):.4g}")
    if out:
        write_profile(replace(
            prof, name=out.stem, engine="vLLM (2024, ML.ENERGY leaderboard v2)",
            source="ML.ENERGY v2 average TPOT vs batch, chat task, Llama-3.1-8B/70B and Mixtral-8x7B on "
                   "A100-SXM4-40GB and H100 (anchors/mlenergy/v2_2024/v2_llm_runs.csv); latency fitted by "
                   "`python scripts/fit_calibration.py --v2`, every third point held out; power constants are the "
                   "default profile's (v2 has no power column)",
            fitted_on=("a100-40gb", "h100"),
            fit_error={f"{k}_median_abs": round(float(np.median(v)), 4) for k, v in errs.items()}), out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--terms", action="store_true", help="also fit the perf-profile terms")
    ap.add_argument("--out", type=Path, help="write the fitted profile JSON here")
    ap.add_argument("--v2", action="store_true", help="fit ML.ENERGY v2's older vLLM instead")
    a = ap.parse_args()
    if a.v2:
        fit_v2(a.data, a.out)
        return
    base = load_profile("default")
    names = BASE_LATENCY + POWER + (TERMS if a.terms else ())
    x0 = np.array([getattr(base.latency, n) if n not in POWER else getattr(base.power, n) for n in names])
    lo, hi = zip(*(BOUNDS[n] for n in names), strict=True)
    x0 = np.clip(x0, lo, hi)
    fit = least_squares(residuals, x0, args=(names, base, a.data), bounds=(lo, hi), loss="soft_l1", f_scale=0.1,
                        diff_step=1e-3, x_scale=np.maximum(np.abs(x0), 1e-5))
    for n, v in zip(names, fit.x, strict=True):
        print(f"{n} = {v:.4g}")
    after = profile_of(base, names, fit.x)
    for label, prof in (("before", base), ("after", after)):
        pts = cal.mlenergy_points(a.data, prof)
        print(label, "ITL", f"{cal.median_abs_error(pts, 'itl_ms'):.1%}", "power",
              f"{cal.median_abs_error(pts, 'power_w'):.1%}")
    if a.out:
        pts = cal.mlenergy_points(a.data, after)
        write_profile(replace(after, fit_error={"itl_ms": round(cal.median_abs_error(pts, "itl_ms"), 4),
                                                "power_w": round(cal.median_abs_error(pts, "power_w"), 4)}), a.out)


if __name__ == "__main__":
    main()
