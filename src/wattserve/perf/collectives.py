"""All-to-all time inside one node, for MoE dispatch and combine under expert parallelism.

Fitted by scripts/fit_alltoall.py to APEX+'s NCCL all-to-all profile (APEX+, Microsoft, arXiv
2411.17651; github.com/microsoft/apex_plus commit 8769096536a34e8b3010fd444021f13858663a93, MIT):
../shared/data/anchors/apex_plus/profile/comm/H100-SXM-80GB/alltoall.csv and
.../H200-SXM-141GB/alltoall.csv, the `half` rows of each group size (2, 4, 8 GPUs in one node;
19 rows each, 1 KiB to 128 MiB, row numbers in the comments below count the header as row 1).
The buffer size is each rank's buffer, as APEX+'s own reader looks rows up
(`size = num_elements * dtype.size // KB`).

The form is piecewise in the per-rank buffer b: flat at `floor_s` up to 256 KiB (launch and
synchronisation; NCCL's LL protocol), `latency_s + b / bw_bytes_s` from 1 MiB (a least-squares line
weighted by 1/t, so relative error is what is minimised), linear between the two. Errors against
the 19 points of each group (`python scripts/fit_alltoall.py`): H100 2/4/8 GPUs max 34.6/23.1/6.9%,
median 9.5/3.1/0.0%; H200 max 16.7/16.7/27.3%, median 5.8/1.4/2.6%.

A100 and MI300X have no APEX+ profile. Their constants are a transfer, not a calibration: H100's
fit with the bandwidth scaled by the GPU's scale-up link bandwidth (GpuSpec.link_gb_s: A100 NVLink3
300 GB/s, MI300X Infinity Fabric 448 GB/s, against H100 NVLink4 450 GB/s) and the latencies kept.
The same holds for any GPU the catalog gains without a profile.

Communication runs on the copy engines and NVLink, not the SMs: its time scales with neither the
SM clock nor the power cap, and the latency model counts it as neither compute nor memory busy time.
"""

from __future__ import annotations

from dataclasses import dataclass

from wattserve.catalog.gpus import GpuSpec

FLAT_MAX_BYTES = 256 * 1024
LINE_MIN_BYTES = 1024 * 1024
REFERENCE_LINK_GB_S = 450.0
"""H100 NVLink4 per-direction bandwidth, the reference the transferred fits scale from."""


@dataclass(frozen=True)
class AllToAllFit:
    """One group size's all-to-all time: flat, then latency + size / bandwidth (see module doc)."""

    floor_s: float
    latency_s: float
    bw_bytes_s: float

    def time_s(self, nbytes: float) -> float:
        """Seconds for one all-to-all in which each rank's buffer is `nbytes`."""
        if nbytes <= FLAT_MAX_BYTES:
            return self.floor_s
        if nbytes >= LINE_MIN_BYTES:
            return self.latency_s + nbytes / self.bw_bytes_s
        top = self.latency_s + LINE_MIN_BYTES / self.bw_bytes_s
        return self.floor_s + (top - self.floor_s) * (nbytes - FLAT_MAX_BYTES) / (LINE_MIN_BYTES - FLAT_MAX_BYTES)

    def scaled(self, bandwidth_ratio: float) -> AllToAllFit:
        return AllToAllFit(self.floor_s, self.latency_s, self.bw_bytes_s * bandwidth_ratio)


ALLTOALL_FITS: dict[str, dict[int, AllToAllFit]] = {
    "H100-SXM": {
        2: AllToAllFit(floor_s=8.500e-06, latency_s=1.207e-05, bw_bytes_s=5.1096e11),  # rows 4-58 step 3
        4: AllToAllFit(floor_s=1.000e-05, latency_s=1.275e-05, bw_bytes_s=3.7922e11),  # rows 3-57 step 3
        8: AllToAllFit(floor_s=1.500e-05, latency_s=1.495e-05, bw_bytes_s=3.3097e11),  # rows 2-56 step 3
    },
    "H200": {
        2: AllToAllFit(floor_s=7.000e-06, latency_s=1.120e-05, bw_bytes_s=4.9189e11),  # rows 4-58 step 3
        4: AllToAllFit(floor_s=9.000e-06, latency_s=1.256e-05, bw_bytes_s=3.6315e11),  # rows 3-57 step 3
        8: AllToAllFit(floor_s=1.300e-05, latency_s=1.436e-05, bw_bytes_s=3.1581e11),  # rows 2-56 step 3
    },
}
"""Keyed by GpuSpec.name, then by the number of GPUs in the all-to-all."""


def alltoall_fit(gpu: GpuSpec, ranks: int) -> AllToAllFit:
    """The fit for `ranks` GPUs of kind `gpu` in one node (2, 4 or 8); a GPU without a profile gets
    H100's scaled by link bandwidth (a transfer, see the module doc)."""
    if ranks not in (2, 4, 8):
        raise ValueError(f"all-to-all is profiled for 2, 4 or 8 GPUs in one node, not {ranks}")
    fits = ALLTOALL_FITS.get(gpu.name)
    if fits is not None:
        return fits[ranks]
    return ALLTOALL_FITS["H100-SXM"][ranks].scaled(gpu.link_gb_s / REFERENCE_LINK_GB_S)
