"""Vidur's operator profiles as whole-iteration rows, so `wattserve calibrate --profile` can fit them (issue 12).

Vidur (Agrawal et al., MLSys 2024; github.com/microsoft/vidur, data/profiling/) times each operator of
one transformer block on one GPU, running the `vidur` branch of microsoft/sarathi-serve (a vLLM fork:
its linear layers are PyTorch/cuBLAS GEMMs, its attention FlashAttention or FlashInfer kernels). A
compute-profile folder `compute/<device>/<hf-org>/<model>/` holds:

- `mlp.csv`: per-layer non-attention operators vs `num_tokens`, per `num_tensor_parallel_workers`
  (the per-rank shard, timed on one GPU; no communication);
- `attention.csv`: the attention kernels, decode (`batch_size` sequences each with `kv_cache_size`
  cached tokens, `prefill_chunk_size` 0) and prefill (one sequence, a chunk of `prefill_chunk_size`
  tokens after `kv_cache_size` cached ones).

Vidur predicts an iteration's model time (vidur/entities/execution_time.py, `model_time`) as the number
of layers times one block: attn_pre_proj + attn_post_proj + attn_rope + attn_kv_cache_save +
attn_decode + attn_prefill + input_layernorm + mlp_up_proj + mlp_down_proj + mlp_act +
post_attention_layernorm + add, plus two tensor-parallel all-reduces when TP > 1. The embedding
(`emb`, timed once per model in mlp.csv) and the LM head are not counted, and neither are here: rows
are Vidur's model time, which leaves out the LM head, sampling and CPU overheads of a real engine.
Vidur's own correction factors (a 10% batching overhead on GQA attention, a 0.02 ms NCCL launch
cost per all-reduce) are model assumptions, not measurements, and are not applied.

Rows are built only at points the profiles hold, each operator at its `.median` (the column Vidur
fits); repeated measurements of one point (mlp.csv repeats a few token counts) are combined by their
median. Pairing:

- decode row: an attention.csv decode point (batch b, kv_cache_size k) with the mlp.csv row at
  num_tokens == b: decode_seqs = b, decode_ctx = b * (k + 1) (each new token attends to its k cached
  tokens and itself, the way our engine counts context, runtime/engine/step_view.py);
- prefill row: an attention.csv prefill point (chunk n, kv_cache_size k, batch 1) with the mlp.csv
  row at num_tokens == n: prefill_tokens = n, prefill_seqs = 1, prefill_ctx = k (k = 0: a whole
  prompt; k > 0: a later chunk of a chunked prefill).

Points with no mlp.csv row at exactly that token count are dropped (mlp.csv covers 1, 2, 4, then
multiples of 8 to 1024, of 16 to 2048, of 32 to 4096, so decode batches that are not among these are
dropped). The one interpolation: at TP > 1 each layer adds two all-reduces of tokens * n_embd * 2
bytes (BF16 activations, as Vidur converts sizes) from Vidur's network profile, read linearly between
the two measured message sizes that bracket it (Vidur's all-reduce grid steps by 8-128 KiB, not by
whole tokens); sizes outside the measured range drop the row.
"""

from __future__ import annotations

import bisect
import csv
import statistics
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import TypeVar

from wattserve.catalog.gpus import GPUS
from wattserve.catalog.models import MODELS, ModelSpec, get_model
from wattserve.errors import UsageError, unknown
from wattserve.perf.iteration_table import IterationRow

DEVICES = {"h100": "h100", "a100": "a100"}
"""Catalog GPU -> Vidur compute folder. Vidur's `a40` has no catalog GPU. Vidur does not name the
exact SKU of its compute runs (docs/profiling.md shares one `a100` folder between PCIe and DGX nodes)."""

NETWORKS = {"h100": "h100_dgx", "a100": "a100_dgx"}
"""Catalog GPU -> Vidur network node whose all-reduce matches the catalog part (SXM on NVSwitch)."""

LAYER_OPS = ("input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
             "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
"""mlp.csv operators in Vidur's block time; `emb` is left out as Vidur leaves it out."""

BLOCK_SIZE = 16
"""Vidur's default KV block size; its predictor keeps only attention rows profiled at this size."""

ACT_BYTES = 2
"""Bytes per activation element in an all-reduce message (BF16), as Vidur turns sizes into tokens."""

_MLP_SHAPE = (("n_head", "heads"), ("n_kv_head", "kv_heads"), ("n_embd", "hidden"), ("n_expanded_embd", "ffn"))
_ATTN_SHAPE = (("n_q_head", "heads"), ("n_kv_head", "kv_heads"), ("n_embd", "hidden"))
_FIELD = "profile"
_EMPTY = {"prefill_tokens": 0, "prefill_seqs": 0, "prefill_ctx": 0, "decode_seqs": 0, "decode_ctx": 0}

K = TypeVar("K", bound=Hashable)


def vidur_folders(profiling_root: Path, device: str, need_attention: bool = True) -> dict[str, Path]:
    """Vidur's model folders for a catalog GPU ("meta-llama/Llama-2-70b-hf" -> folder), for the CLI's
    allowed values. `profiling_root` is Vidur's data/profiling folder. With need_attention, only
    folders that hold both mlp.csv and attention.csv, the ones vidur_rows can use."""
    if device not in DEVICES:
        raise unknown("device", device, DEVICES)
    base = Path(profiling_root) / "compute" / DEVICES[device]
    found = {}
    for mlp in sorted(base.glob("*/*/mlp.csv")):
        folder = mlp.parent
        if need_attention and not (folder / "attention.csv").is_file():
            continue
        found[f"{folder.parent.name}/{folder.name}"] = folder
    return found


def vidur_rows(model_dir: Path, model: str, device: str, tp: int = 1,
               all_reduce: Path | None = None) -> list[IterationRow]:
    """Whole-iteration rows from one Vidur compute-profile folder, for catalog `model` on catalog
    `device` at tensor-parallel degree `tp` (the pairing is in the module docstring).

    The folder's shapes (heads, KV heads, hidden, FFN width, gated MLP) must be the catalog model's,
    or UsageError names `profile`; the layer count is the catalog's (Vidur's CSVs do not hold it).
    `all_reduce` (TP > 1 only) is a Vidur network all_reduce.csv; left out, the one for the device's
    node (NETWORKS) beside the compute folder in Vidur's layout is used."""
    spec = get_model(model)
    key = next(k for k, v in MODELS.items() if v is spec)
    if device not in DEVICES:
        raise unknown("device", device, [d for d in DEVICES if d in GPUS])
    if tp < 1:
        raise UsageError(f"tp={tp} is not allowed; allowed: an integer >= 1", "tp")
    folder = Path(model_dir)
    _check_device(folder, device)
    layer = linear_ms(folder / "mlp.csv", spec, tp)
    decode, prefill, backend = _attention(folder / "attention.csv", spec, tp)
    comm = _all_reduce_ms(_network_file(folder, device, all_reduce), spec, tp) if tp > 1 else _no_comm
    engine = f"vidur-profile (sarathi-serve, {backend})"

    def row(tokens: int, attn: float, **shape: int) -> IterationRow | None:
        if tokens not in layer:
            return None
        ar = comm(tokens)
        if ar is None:
            return None
        return IterationRow(engine=engine, device=device, model=key, tp=tp, iter_ms=spec.layers * (
            layer[tokens] + attn + 2 * ar), **{**_EMPTY, **shape})

    rows = [row(b, t, decode_seqs=b, decode_ctx=b * (k + 1)) for (b, k), t in sorted(decode.items())]
    rows += [row(n, t, prefill_tokens=n, prefill_seqs=1, prefill_ctx=k) for (n, k), t in sorted(prefill.items())]
    kept = [r for r in rows if r is not None]
    if not kept:
        raise UsageError(f"{str(folder)!r} has no attention point whose token count mlp.csv also holds at "
                         f"tp={tp}; allowed: a Vidur profile with matching mlp and attention grids", _FIELD)
    return kept


def linear_ms(path: Path, spec: ModelSpec, tp: int) -> dict[int, float]:
    """One layer's non-attention time (LAYER_OPS, ms) per token count in a Vidur mlp.csv at `tp`."""
    if spec.is_moe:
        raise UsageError(f"{spec.name} is a mixture of experts and Vidur profiles dense MLPs only; allowed: a "
                         "dense catalog model", _FIELD)
    rows = _read(path, "mlp.csv")
    _check_shape(rows, _MLP_SHAPE, spec, path)
    if any(r.get("use_gated_mlp", "").strip().lower() != "true" for r in rows):
        raise UsageError(f"{str(path)!r} profiles an ungated MLP; {spec.name} has a gated (SwiGLU) MLP; "
                         "allowed: a Vidur profile of the catalog model's architecture", _FIELD)
    at_tp = [r for r in rows if _int(r, "num_tensor_parallel_workers", path) == tp]
    if not at_tp:
        have = sorted({_int(r, "num_tensor_parallel_workers", path) for r in rows})
        raise UsageError(f"tp={tp} is not in {str(path)!r}; allowed: {', '.join(map(str, have))}", "tp")
    times: dict[int, list[float]] = defaultdict(list)
    for r in at_tp:
        times[_int(r, "num_tokens", path)].append(sum(_ms(r, op, path) for op in LAYER_OPS))
    return {n: statistics.median(v) for n, v in sorted(times.items())}


def _attention(path: Path, spec: ModelSpec, tp: int
               ) -> tuple[dict[tuple[int, int], float], dict[tuple[int, int], float], str]:
    """Decode times by (batch, kv) and prefill times by (chunk, kv), ms per layer, and the kernel
    backend's name."""
    if not path.is_file():
        raise UsageError(f"{str(path.parent)!r} has no attention.csv (Vidur's attention-kernel profile; the "
                         "shared data's copy of Vidur omits these files, see its PROVENANCE.md); allowed: a "
                         "Vidur compute-profile folder holding both mlp.csv and attention.csv", _FIELD)
    rows = _read(path, "attention.csv")
    _check_shape(rows, _ATTN_SHAPE, spec, path)
    at_tp = [r for r in rows if _int(r, "num_tensor_parallel_workers", path) == tp
             and _int(r, "block_size", path) == BLOCK_SIZE]
    if not at_tp:
        have = sorted({_int(r, "num_tensor_parallel_workers", path) for r in rows
                       if _int(r, "block_size", path) == BLOCK_SIZE})
        raise UsageError(f"tp={tp} (block_size {BLOCK_SIZE}) is not in {str(path)!r}; allowed: "
                         f"{', '.join(map(str, have)) or 'none'}", "tp")
    decode: dict[tuple[int, int], list[float]] = defaultdict(list)
    prefill: dict[tuple[int, int], list[float]] = defaultdict(list)
    for r in at_tp:
        kv = _int(r, "kv_cache_size", path)
        save = _ms(r, "attn_kv_cache_save", path)
        if r.get("is_prefill", "").strip().lower() == "true":
            if _int(r, "batch_size", path) == 1:
                prefill[(_int(r, "prefill_chunk_size", path), kv)].append(_ms(r, "attn_prefill", path, True) + save)
        else:
            decode[(_int(r, "batch_size", path), kv)].append(_ms(r, "attn_decode", path, True) + save)
    backends = sorted({(r.get("attention_backend") or "").strip().removeprefix("AttentionBackend.") for r in at_tp})
    return _medians(decode), _medians(prefill), "/".join(b for b in backends if b) or "attention kernels"


def _all_reduce_ms(path: Path, spec: ModelSpec, tp: int) -> Callable[[int], float | None]:
    """One all-reduce of a `tokens`-token activation (ms) on `tp` GPUs of one node, read linearly
    between the bracketing measured sizes; None outside them."""
    rows = [r for r in _read(path, "all_reduce.csv") if r.get("collective", "all_reduce") == "all_reduce"
            and _int(r, "num_workers", path) == tp and _int(r, "devices_per_node", path) == tp]
    if not rows:
        raise UsageError(f"{str(path)!r} has no all-reduce on {tp} GPUs of one node; allowed: a Vidur "
                         "network all_reduce.csv with num_workers == devices_per_node == tp", _FIELD)
    by_size: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        by_size[_int(r, "size", path)].append(_ms(r, "all_reduce", path, True))
    table = _medians(by_size)
    sizes = sorted(table)

    def at(tokens: int) -> float | None:
        size = tokens * spec.hidden * ACT_BYTES
        i = bisect.bisect_left(sizes, size)
        if i == len(sizes) or (sizes[i] != size and i == 0):
            return None
        if sizes[i] == size:
            return table[size]
        lo, hi = sizes[i - 1], sizes[i]
        return table[lo] + (table[hi] - table[lo]) * (size - lo) / (hi - lo)

    return at


def _no_comm(tokens: int) -> float:
    return 0.0


def _network_file(folder: Path, device: str, given: Path | None) -> Path:
    if given is not None:
        return Path(given)
    parts = folder.resolve().parts
    if len(parts) >= 5 and parts[-4] == "compute":
        path = Path(*parts[:-4]) / "network" / NETWORKS[device] / "all_reduce.csv"
        if path.is_file():
            return path
    raise UsageError(f"no Vidur all_reduce.csv for {device} found beside {str(folder)!r}; allowed: tp=1, or "
                     f"a folder in Vidur's layout (data/profiling/compute/...) with network/{NETWORKS[device]}/"
                     "all_reduce.csv, or an explicit all_reduce path", _FIELD)


def _check_device(folder: Path, device: str) -> None:
    """In Vidur's layout the folder names its GPU; a profile of another GPU is refused."""
    parts = folder.resolve().parts
    if len(parts) >= 5 and parts[-4] == "compute" and parts[-3] != DEVICES[device]:
        match = [k for k, v in DEVICES.items() if v == parts[-3]]
        raise UsageError(f"{str(folder)!r} is a Vidur profile of {parts[-3]!r}, not {device!r}; allowed: "
                         f"{', '.join(match) or 'none (no catalog GPU matches it)'}", "device")


def _check_shape(rows: list[dict[str, str]], columns: Iterable[tuple[str, str]], spec: ModelSpec,
                 path: Path) -> None:
    for col, attr in columns:
        want = getattr(spec, attr)
        have = sorted({_int(r, col, path) for r in rows})
        if have != [want]:
            raise UsageError(f"{str(path)!r} has {col}={', '.join(map(str, have))} but {spec.name} has {attr}="
                             f"{want}; allowed: a Vidur profile of the catalog model's architecture", _FIELD)


def _read(path: Path, name: str) -> list[dict[str, str]]:
    try:
        with Path(path).open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise UsageError(f"cannot read {str(path)!r} ({e.strerror}); allowed: a Vidur profile folder with "
                         f"{name}", _FIELD) from None
    if not rows:
        raise UsageError(f"{str(path)!r} has no rows; allowed: a Vidur {name}", _FIELD)
    return rows


def _int(r: dict[str, str], col: str, path: Path) -> int:
    text = (r.get(col) or "").strip()
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if v != v or v != int(v):
        raise UsageError(f"{str(path)!r}: {col}={text!r} is not allowed; allowed: an integer", _FIELD)
    return int(v)


def _ms(r: dict[str, str], op: str, path: Path, required: bool = False) -> float:
    """An operator's median (ms). A missing or empty optional column is 0, as Vidur fills it (the layer
    norms, `add` and `attn_kv_cache_save` are absent from older profiles); the kernel a row measures
    (`required`) must be there and positive."""
    text = (r.get(f"time_stats.{op}.median") or "").strip()
    if not text and not required:
        return 0.0
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not (v > 0 if required else v >= 0):
        raise UsageError(f"{str(path)!r}: time_stats.{op}.median={text!r} is not allowed; allowed: a number "
                         f"{'> 0' if required else '>= 0'} (ms)", _FIELD)
    return v


def _medians(d: dict[K, list[float]]) -> dict[K, float]:
    return {k: statistics.median(v) for k, v in d.items()}
