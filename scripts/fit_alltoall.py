"""Fit the all-to-all latency constants in src/wattserve/perf/collectives.py to APEX+'s NCCL profile.

Reads ../shared/data/anchors/apex_plus/profile/comm/{H100-SXM-80GB,H200-SXM-141GB}/alltoall.csv
(APEX+, Microsoft, github.com/microsoft/apex_plus commit 8769096, MIT; columns
gpu,num_nodes,num_gpus_per_node,dtype,size(kb),time(us)). `size(kb)` is each rank's buffer in KiB:
APEX+'s own reader (apex_plus/profile comm loader, `size = num_elements * dtype.size // KB`) looks
rows up that way. Only the `half` rows are used: the payload is BF16, and the `float` rows at
4-256 KiB carry 1-2 ms outliers (e.g. 1872 us for 4 KiB at 2 GPUs) that are launch artefacts, not
transfers.

What is fitted, per GPU kind and group size n (2, 4, 8 GPUs in one node), piecewise in the
per-rank buffer size b:
    t(b) = floor_n                          b <= 256 KiB   (latency-flat: launch and synchronisation)
    t(b) = a_n + b / bw_n                   b >= 1 MiB     (latency + bandwidth)
    t(b) = linear between the two           256 KiB < b < 1 MiB, so t is continuous
floor_n is the median time of the rows up to 256 KiB; a_n and bw_n are a least-squares line through
the rows from 1 MiB up, weighted by 1/t so the error minimised is relative (an unweighted fit would
serve the 128 MiB rows and miss the 1-8 MiB rows a decode step sends). The line's intercept a_n lies
above floor_n: NCCL switches protocol (LL to Simple) as messages grow, so a single
latency + size/bandwidth line cannot also hold for small messages. The script prints the constants
as they appear in collectives.py, then every half row's relative error and the largest and median
error per group.

Usage: python scripts/fit_alltoall.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

KINDS = {"h100": "H100-SXM-80GB", "h200": "H200-SXM-141GB"}
FLAT_MAX_KB = 256
LINE_MIN_KB = 1024


def load(path: Path) -> dict[int, list[tuple[int, float, int]]]:
    """Half-precision rows per group size: (size in KiB, time in us, CSV row number with header = 1)."""
    groups: dict[int, list[tuple[int, float, int]]] = {}
    with path.open() as f:
        for row_no, row in enumerate(csv.DictReader(f), start=2):
            if row["dtype"] != "half" or row["num_nodes"] != "1":
                continue
            groups.setdefault(int(row["num_gpus_per_node"]), []).append(
                (int(row["size(kb)"]), float(row["time(us)"]), row_no))
    return groups


def fit(rows: list[tuple[int, float, int]]) -> tuple[float, float, float]:
    """(floor_s, a_s, bw_bytes_per_s) for one group."""
    flat = [t for kb, t, _ in rows if kb <= FLAT_MAX_KB]
    line = [(kb * 1024.0, t) for kb, t, _ in rows if kb >= LINE_MIN_KB]
    x = np.array([b for b, _ in line])
    y = np.array([t for _, t in line]) * 1e-6
    w = 1.0 / y
    design = np.stack([np.ones_like(x), x], axis=1) * w[:, None]
    (a, inv_bw), *_ = np.linalg.lstsq(design, y * w, rcond=None)
    return float(np.median(flat)) * 1e-6, float(a), float(1.0 / inv_bw)


def predict(floor_s: float, a_s: float, bw: float, nbytes: float) -> float:
    """The same piecewise form as wattserve.perf.collectives.AllToAllFit.time_s."""
    lo, hi = FLAT_MAX_KB * 1024.0, LINE_MIN_KB * 1024.0
    if nbytes <= lo:
        return floor_s
    line_hi = a_s + hi / bw
    if nbytes < hi:
        return floor_s + (line_hi - floor_s) * (nbytes - lo) / (hi - lo)
    return a_s + nbytes / bw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    a = ap.parse_args()
    report = []
    print("ALLTOALL_FITS = {")
    for kind, folder in KINDS.items():
        path = a.data / "anchors" / "apex_plus" / "profile" / "comm" / folder / "alltoall.csv"
        groups = load(path)
        print(f"    {kind!r}: {{")
        for n in sorted(groups):
            rows = groups[n]
            floor_s, a_s, bw = fit(rows)
            errs = [(predict(floor_s, a_s, bw, kb * 1024.0) * 1e6 - t) / t for kb, t, _ in rows]
            lines = f"rows {min(r for *_, r in rows)}-{max(r for *_, r in rows)}"
            print(f"        {n}: AllToAllFit(floor_s={floor_s:.3e}, latency_s={a_s:.3e}, "
                  f"bw_bytes_s={bw:.4e}),  # {lines}")
            report.append((kind, n, len(rows), float(np.max(np.abs(errs))), float(np.median(np.abs(errs))), rows, errs))
        print("    },")
    print("}")
    print()
    print("gpu   n  points  max |err|  median |err|")
    for kind, n, count, worst, med, *_ in report:
        print(f"{kind:5} {n}  {count:6}  {worst:8.1%}  {med:11.1%}")
    print()
    print("gpu   n  size_kb  measured_us  fitted_us  err")
    for kind, n, _, _, _, rows, errs in report:
        for (kb, t, _), e in zip(rows, errs, strict=True):
            print(f"{kind:5} {n}  {kb:7}  {t:11.0f}  {t * (1 + e):9.1f}  {e:+.1%}")


if __name__ == "__main__":
    main()
