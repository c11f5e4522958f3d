"""GPU specifications.

Sources, unless a field says otherwise: ../shared/data/anchors/mlenergy/gpu_specs.csv, which gathers
vendor datasheets and public `nvidia-smi -q` / `rocm-smi` dumps. Idle power for H100 and A100 is the
Splitwise authors' constant power model (splitwise-sim configs/power_model/constant.yaml: H100 75 W,
A100 63 W), which sits inside the ranges seen in the nvidia-smi dumps (71-101 W and 52-68 W).
Interconnect figures: TP all-reduce latency and bus bandwidth are fitted to Vidur's NCCL profile
(../shared/data/anchors/vidur/data/profiling/network/h100_dgx/all_reduce.csv: 64 MiB in 0.245 ms at
TP2, 0.318 ms at TP4, 0.322 ms at TP8; 1 MiB in about 0.035 ms).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from wattserve.errors import unknown


@dataclass(frozen=True)
class GpuSpec:
    name: str
    bf16_tflops: float
    hbm_gb: float
    hbm_tb_s: float
    tdp_w: float
    cap_min_w: float
    cap_max_w: float
    clock_min_mhz: int
    clock_max_mhz: int
    clock_step_mhz: int
    idle_w: float
    link_gb_s: float
    """Per-GPU, per-direction scale-up link bandwidth (NVLink / Infinity Fabric), for KV hand-off."""
    allreduce_bus_gb_s: float
    allreduce_latency_s: float
    network_gb_s: float = 50.0
    """Per-GPU scale-out NIC (400 Gb/s InfiniBand NDR = 50 GB/s) for KV hand-off across nodes."""
    network_latency_s: float = 20e-6
    compute_units: int = 132
    """SMs (NVIDIA) or CUs (AMD): what a compute share is counted in."""
    share_step: int = 8
    """Smallest step of a compute share in compute units: H100 green contexts split SMs in groups of 8
    (CUDA driver API, cuDevSmResourceSplitByCount on compute capability 9.0); MI300X CU masks set
    single CUs."""

    @cached_property
    def clocks(self) -> tuple[int, ...]:
        """Supported SM clock steps, ascending (asked for before every governed iteration, so made once)."""
        return tuple(range(self.clock_min_mhz, self.clock_max_mhz + 1, self.clock_step_mhz))

    @property
    def peak_flops(self) -> float:
        return self.bf16_tflops * 1e12

    @property
    def hbm_bytes_s(self) -> float:
        return self.hbm_tb_s * 1e12

    @property
    def hbm_bytes(self) -> float:
        return self.hbm_gb * 1e9


GPUS: dict[str, GpuSpec] = {
    # H100 SXM5 80GB: 989.4 TFLOP/s dense BF16, 3.35 TB/s, 700 W; nvidia-smi power limit range
    # 200-700 W, SM clocks 345-1980 MHz in 15 MHz steps (gpu_specs.csv). NVLink4 450 GB/s/direction.
    "h100": GpuSpec(
        name="H100-SXM", bf16_tflops=989.4, hbm_gb=80, hbm_tb_s=3.35, tdp_w=700, cap_min_w=200,
        cap_max_w=700, clock_min_mhz=345, clock_max_mhz=1980, clock_step_mhz=15, idle_w=75,
        link_gb_s=450, allreduce_bus_gb_s=360, allreduce_latency_s=30e-6, compute_units=132,
    ),
    # H200 SXM 141GB: same compute as H100, 4.8 TB/s HBM3e, 700 W, 200-700 W limits, idle 73-76 W.
    "h200": GpuSpec(
        name="H200", bf16_tflops=989.4, hbm_gb=141, hbm_tb_s=4.8, tdp_w=700, cap_min_w=200,
        cap_max_w=700, clock_min_mhz=345, clock_max_mhz=1980, clock_step_mhz=15, idle_w=75,
        link_gb_s=450, allreduce_bus_gb_s=360, allreduce_latency_s=30e-6,
    ),
    # A100 SXM4 80GB: 312 TFLOP/s, 2.039 TB/s, 400 W, 100-400 W limits, 210-1410 MHz, idle 63 W
    # (Splitwise). NVLink3 300 GB/s/direction; all-reduce from vidur network/a100_dgx scaled to NVLink3.
    "a100": GpuSpec(
        name="A100-SXM-80GB", bf16_tflops=312, hbm_gb=80, hbm_tb_s=2.039, tdp_w=400, cap_min_w=100,
        cap_max_w=400, clock_min_mhz=210, clock_max_mhz=1410, clock_step_mhz=15, idle_w=63,
        link_gb_s=300, allreduce_bus_gb_s=230, allreduce_latency_s=35e-6, compute_units=108,
    ),
    # A100 SXM4 40GB: as the 80 GB part but 40 GB of HBM2 at 1.555 TB/s (gpu_specs.csv, A100 row note).
    "a100-40gb": GpuSpec(
        name="A100-SXM-40GB", bf16_tflops=312, hbm_gb=40, hbm_tb_s=1.555, tdp_w=400, cap_min_w=100,
        cap_max_w=400, clock_min_mhz=210, clock_max_mhz=1410, clock_step_mhz=15, idle_w=63,
        link_gb_s=300, allreduce_bus_gb_s=230, allreduce_latency_s=35e-6, compute_units=108,
    ),
    # H100 PCIe 80GB: 756 TFLOP/s dense BF16 (NVIDIA H100 datasheet: 1,513 with sparsity), 2.0 TB/s and
    # 350 W (product brief PB-11133), SM clocks up to 1755 MHz, idle about 62 W (gpu_specs.csv, its
    # "low (contrast only)" row). No NVLink bridge assumed: KV and all-reduce go over PCIe Gen5 x16
    # (64 GB/s per direction; bus bandwidth 40 GB/s and 50 us latency are our assumptions).
    "h100-pcie": GpuSpec(
        name="H100-PCIe", bf16_tflops=756, hbm_gb=80, hbm_tb_s=2.0, tdp_w=350, cap_min_w=200,
        cap_max_w=350, clock_min_mhz=345, clock_max_mhz=1755, clock_step_mhz=15, idle_w=62,
        link_gb_s=64, allreduce_bus_gb_s=40, allreduce_latency_s=50e-6, compute_units=114,
    ),
    # MI300X OAM 192GB: 1307.4 TFLOP/s, 5.3 TB/s, 750 W, sclk 500-2100 MHz, idle 130-137 W (rocm-smi).
    # The minimum power cap is not in gpu_specs.csv ("unknown"): 300 W is assumed, below the lowest
    # cap RAPID studies (450 W). Infinity Fabric: 7 links x 64 GB/s = 448 GB/s per direction.
    "mi300x": GpuSpec(
        name="MI300X", bf16_tflops=1307.4, hbm_gb=192, hbm_tb_s=5.3, tdp_w=750, cap_min_w=300,
        cap_max_w=750, clock_min_mhz=500, clock_max_mhz=2100, clock_step_mhz=25, idle_w=132,
        link_gb_s=448, allreduce_bus_gb_s=300, allreduce_latency_s=40e-6, compute_units=304, share_step=1,
    ),
    # The host CPU our runtime's CPU back end runs on, so that the simulator can mirror it (`wattserve
    # validate`). Nominal figures, not a datasheet: 0.1 TFLOP/s and 20 GB/s are what a CPU perf
    # profile's efficiencies are fitted against (perf/perf_profile.py); caps and clocks are placeholders
    # no control acts on.
    "cpu": GpuSpec(
        name="CPU", bf16_tflops=0.1, hbm_gb=16, hbm_tb_s=0.02, tdp_w=65, cap_min_w=15, cap_max_w=65,
        clock_min_mhz=1000, clock_max_mhz=3000, clock_step_mhz=100, idle_w=10, link_gb_s=5,
        allreduce_bus_gb_s=5, allreduce_latency_s=20e-6, compute_units=2, share_step=1,
    ),
}

_ALIASES = {"h100-sxm": "h100", "h200-sxm": "h200", "a100-sxm-80gb": "a100", "a100-80gb": "a100",
            "a100-sxm-40gb": "a100-40gb", "h100-pcie-80gb": "h100-pcie"}


def get_gpu(name: str) -> GpuSpec:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in GPUS:
        raise unknown("gpu", name, GPUS)
    return GPUS[key]


DEVICE_NAMES = (("h100 pcie", "h100-pcie"), ("h100", "h100"), ("h200", "h200"), ("a100-sxm4-40gb", "a100-40gb"),
                ("a100", "a100"), ("mi300x", "mi300x"))
"""(substring of a driver's lower-cased device name, catalog GPU), most specific first."""


def gpu_key(name: str, driver_names: bool = True) -> str | None:
    """The catalog GPU a device name stands for: a catalog key ("h100"), a spec name ("H100-SXM"),
    either with a modelled agent's " (modelled)" suffix, or (with `driver_names`) a driver's name
    ("NVIDIA H100 80GB HBM3", torch's and NVML's alike); None when the catalog has no such GPU."""
    n = name.removesuffix(" (modelled)").strip().lower()
    if n in GPUS:
        return n
    spec = next((k for k, v in GPUS.items() if v.name.lower() == n), None)
    if spec is not None or not driver_names:
        return spec
    return next((key for sub, key in DEVICE_NAMES if sub in n), None)
