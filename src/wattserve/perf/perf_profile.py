"""Perf profiles: one engine's fitted latency and power constants, with where they came from.

Vidur profiles operators per (model, GPU); BiScale and PALS fit their models per deployment. A perf
profile is that idea at our model's granularity: the roofline's efficiencies and fixed costs
(perf/latency.py) and the power model's constants (perf/power.py), fitted to one engine's
measurements, in a small JSON file that names its data. `--perf-profile` picks one on `simulate`,
`estimate` and `compare`; `wattserve calibrate --profile TABLE --out FILE` writes one.

A profile is calibrated for the devices it lists in `fitted_on`; on any other GPU the constants are a
transfer (the GPU's own peak FLOP/s and bandwidth, the profile's efficiencies) and every output says
so (`calibration_warning`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from wattserve.catalog.gpus import GpuSpec
from wattserve.catalog.models import ModelSpec
from wattserve.errors import UsageError
from wattserve.perf import latency as lat
from wattserve.perf import power as pw
from wattserve.perf.latency import RooflineLatencyModel
from wattserve.perf.power import UtilizationPowerModel

DEFAULT = "default"


@dataclass(frozen=True)
class LatencyParams:
    """The roofline's constants (perf/latency.py says what each one prices)."""

    eff_gemm: float = lat.EFF_GEMM
    eff_mem: float = lat.EFF_MEM
    eff_kv: float = lat.EFF_MEM
    eff_attn: float = lat.EFF_ATTN
    gemm_p: float = lat.GEMM_P
    step_overhead_s: float = lat.OVERHEAD_S
    seq_overhead_s: float = 0.0
    prompt_overhead_s: float = 0.0
    layer_overhead_s: float = 0.0
    comm_overhead_s: float = 0.0
    attn_masked_share: float = 0.0
    """The share of each prefill chunk's masked query-key pairs its attention computes anyway (0..1)."""
    mixed_overhead_s: float = 0.0
    """The extra cost of a step holding prompt chunks and decodes together (both attention paths)."""
    request_overhead_s: float = 0.0
    """A request's serving cost outside engine steps (HTTP, tokenization, routing, the first token's
    way back), which every TTFT carries: the simulator routes each request this long after it arrives.
    0 for profiles fitted to engine-internal measurements (ML.ENERGY's ITL, Vidur's operators)."""
    handoff_overhead_s: float = 0.0
    """A KV hand-off's fixed cost beyond its bytes over the link (serialising, the message between
    processes, the decode side's admission): added to every transfer's latency."""


@dataclass(frozen=True)
class PowerParams:
    """The utilization power model's constants on `reference_gpu`; other GPUs scale them by their
    (TDP - idle) range (perf/power.py)."""

    busy_w: float = pw.H100_BUSY_W
    compute_w: float = pw.H100_COMPUTE_W
    memory_w: float = pw.H100_MEMORY_W
    gamma: float = pw.H100_GAMMA
    reference_gpu: str = "h100"


@dataclass(frozen=True)
class PerfProfile:
    name: str
    engine: str
    source: str
    """The data the constants were fitted to and the command that fitted them."""
    fitted_on: tuple[str, ...]
    """Catalog device names with measurements behind the constants."""
    latency: LatencyParams = field(default_factory=LatencyParams)
    power: PowerParams = field(default_factory=PowerParams)
    fit_error: dict[str, float] = field(default_factory=dict)
    """Median absolute relative errors the fit reported (on its own rows and on held-out rows)."""

    def latency_model(self, gpu: GpuSpec, model: ModelSpec, tp: int = 1, ep: int = 1,
                      expert_skew: float | None = None) -> RooflineLatencyModel:
        p = self.latency
        return RooflineLatencyModel(gpu, model, tp, ep, expert_skew, eff_gemm=p.eff_gemm, eff_mem=p.eff_mem,
                                    eff_attn=p.eff_attn, overhead_s=p.step_overhead_s, gemm_p=p.gemm_p,
                                    eff_kv=p.eff_kv, seq_overhead_s=p.seq_overhead_s,
                                    prompt_overhead_s=p.prompt_overhead_s,
                                    layer_overhead_s=p.layer_overhead_s, comm_overhead_s=p.comm_overhead_s,
                                    attn_masked_share=p.attn_masked_share, mixed_overhead_s=p.mixed_overhead_s)

    def power_model(self, gpu: GpuSpec) -> UtilizationPowerModel:
        from wattserve.catalog.gpus import get_gpu

        p = self.power
        ref = get_gpu(p.reference_gpu)
        k = (gpu.tdp_w - gpu.idle_w) / (ref.tdp_w - ref.idle_w)
        return UtilizationPowerModel(gpu, p.busy_w * k, p.compute_w * k, p.memory_w * k, p.gamma)

    def calibrated_for(self, gpu: str) -> bool:
        from wattserve.catalog.gpus import get_gpu

        key = get_gpu(gpu).name
        return any(get_gpu(g).name == key for g in self.fitted_on)

    def warning(self, gpu: str) -> str | None:
        """One line for every output of a run on a GPU this profile has no measurements for."""
        if self.calibrated_for(gpu):
            return None
        return (f"UNCALIBRATED: perf profile {self.name!r} was fitted on {', '.join(self.fitted_on)}; on {gpu} "
                "its latency and power are a transfer by peak specs, not a calibration (docs/calibration.md)")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["fitted_on"] = list(self.fitted_on)
        return d

    def with_latency(self, **changes: float) -> PerfProfile:
        return replace(self, latency=replace(self.latency, **changes))


def shipped() -> tuple[str, ...]:
    """Names of the profiles in the package, the default first."""
    names = sorted(p.name.removesuffix(".json") for p in _folder().iterdir() if p.name.endswith(".json"))
    return tuple(sorted(names, key=lambda n: n != DEFAULT))


def _folder() -> Any:
    return resources.files("wattserve").joinpath("data", "perf_profiles")


def load_profile(name_or_path: str, field_name: str = "perf_profile") -> PerfProfile:
    """A shipped profile by name, or a profile file by path; one UsageError naming the field otherwise."""
    allowed = f"allowed: {', '.join(shipped())}, or a profile JSON file"
    if name_or_path in shipped():
        text = _folder().joinpath(f"{name_or_path}.json").read_text()
        where = name_or_path
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise UsageError(f"unknown perf profile {name_or_path!r}; {allowed}", field_name)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read {name_or_path!r} ({e}); {allowed}", field_name) from None
        where = str(path)
    try:
        return from_json(json.loads(text))
    except (ValueError, TypeError, KeyError) as e:
        raise UsageError(f"{where!r} is not a perf profile ({e}); {allowed}", field_name) from None


def from_json(d: dict[str, Any]) -> PerfProfile:
    if not isinstance(d, dict):
        raise ValueError("expected a JSON object")
    lat_keys = {f.name for f in fields(LatencyParams)}
    pow_keys = {f.name for f in fields(PowerParams)}
    latency = dict(d.get("latency") or {})
    power = dict(d.get("power") or {})
    extra = (set(latency) - lat_keys) | (set(power) - pow_keys)
    if extra:
        raise ValueError(f"unknown key(s) {', '.join(sorted(extra))}")
    for k, v in latency.items():
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"latency.{k}={v!r} must be a number >= 0")
    for k in ("eff_gemm", "eff_mem", "eff_kv", "eff_attn", "gemm_p"):
        if k in latency and latency[k] <= 0:
            raise ValueError(f"latency.{k} must be > 0")
    if latency.get("attn_masked_share", 0) > 1:
        raise ValueError("latency.attn_masked_share must be at most 1 (a share of the masked pairs)")
    fitted = d.get("fitted_on") or []
    if isinstance(fitted, str) or not all(isinstance(g, str) for g in fitted):
        raise ValueError("fitted_on must be a list of device names")
    return PerfProfile(name=str(d["name"]), engine=str(d.get("engine", "")), source=str(d.get("source", "")),
                       fitted_on=tuple(fitted), latency=LatencyParams(**latency), power=PowerParams(**power),
                       fit_error={str(k): float(v) for k, v in (d.get("fit_error") or {}).items()})


def write_profile(profile: PerfProfile, path: str | Path) -> None:
    Path(path).write_text(json.dumps(profile.to_json(), indent=2) + "\n")


def calibration_fields(name_or_path: str, gpu: str) -> dict[str, Any]:
    """What every result file says about the constants behind it (summary.json, compare.json)."""
    profile = load_profile(name_or_path)
    return {"perf_profile": profile.name, "calibration_warning": profile.warning(gpu)}
