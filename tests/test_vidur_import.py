"""Vidur's operator profiles as iteration rows (perf/vidur_import.py, issue 12).

The shared data's copy of Vidur holds mlp.csv and the network profiles but not attention.csv (its
PROVENANCE.md: the ~10 MB files could not be copied), so the rows are built here from the real
mlp.csv and all_reduce.csv and a small synthetic attention.csv in Vidur's columns and grid: the
attention numbers test the pairing, not Vidur's kernels. Where a real attention.csv is present, the
last test runs on it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from wattserve.catalog.models import get_model
from wattserve.errors import UsageError
from wattserve.perf.iteration_table import read_rows, write_rows
from wattserve.perf.vidur_import import linear_ms, vidur_folders, vidur_rows

VIDUR = Path("anchors/vidur/data/profiling")
L70 = "meta-llama/Llama-2-70b-hf"
SPEC = get_model("llama-2-70b")
BATCHES = (1, 3, 8, 32, 64)
KVS = (32, 256, 1024, 2048)
CHUNKS = (64, 512, 1024, 2048)


def decode_ms(b: int, kv: int, tp: int) -> float:
    return 0.01 + 2e-6 * b * (kv + 1) / tp


def prefill_ms(n: int, kv: int, tp: int) -> float:
    return 0.01 + 1e-7 * n * (kv + n / 2) / tp


def write_attention(path: Path, tps: tuple[int, ...] = (1, 2, 4)) -> None:
    cols = [f"time_stats.{op}.median" for op in ("attn_kv_cache_save", "attn_prefill", "attn_decode")]
    keys = ["n_embd", "n_q_head", "n_kv_head", "block_size", "num_tensor_parallel_workers", "max_model_len",
            "batch_size", "prefill_chunk_size", "kv_cache_size", "is_prefill", "attention_backend"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols + keys)
        base = [SPEC.hidden, SPEC.heads, SPEC.kv_heads, 16]
        for tp in tps:
            for b in BATCHES:
                for kv in KVS:
                    w.writerow([0.001 * b, "", decode_ms(b, kv, tp), *base, tp, 4096, b, 0, kv, False,
                                "AttentionBackend.FLASHINFER"])
            for n in CHUNKS:
                for kv in (0, n):
                    w.writerow([0.001 * n, prefill_ms(n, kv, tp), "", *base, tp, 4096, 1, n, kv, True,
                                "AttentionBackend.FLASHINFER"])


@pytest.fixture()
def tree(data_dir: Path, tmp_path: Path) -> Path:
    """A Vidur data/profiling tree: the real H100 mlp.csv and all_reduce.csv, a synthetic attention.csv."""
    real = data_dir / VIDUR
    folder = tmp_path / "compute/h100" / L70
    folder.mkdir(parents=True)
    (folder / "mlp.csv").symlink_to((real / "compute/h100" / L70 / "mlp.csv").resolve())
    write_attention(folder / "attention.csv")
    net = tmp_path / "network/h100_dgx"
    net.mkdir(parents=True)
    (net / "all_reduce.csv").symlink_to((real / "network/h100_dgx/all_reduce.csv").resolve())
    return tmp_path


def test_rows_at_each_tp(tree: Path) -> None:
    for tp in (1, 2, 4):
        rows = vidur_rows(tree / "compute/h100" / L70, "llama-2-70b", "h100", tp)
        assert rows and all(r.iter_ms > 0 for r in rows)
        assert {r.kind for r in rows} == {"decode", "prefill"}
        assert {(r.engine, r.device, r.model, r.tp) for r in rows} == {
            ("vidur-profile (sarathi-serve, FLASHINFER)", "h100", "llama-2-70b", tp)}


def test_pairing_is_exact_and_drops_unprofiled_token_counts(tree: Path) -> None:
    rows = vidur_rows(tree / "compute/h100" / L70, "llama-2-70b", "h100")
    lin = linear_ms(tree / "compute/h100" / L70 / "mlp.csv", SPEC, 1)
    dec = {(r.decode_seqs, r.decode_ctx // r.decode_seqs - 1): r.iter_ms for r in rows if r.kind == "decode"}
    assert {b for b, _ in dec} == {1, 8, 32, 64}
    assert dec[(32, 1024)] == pytest.approx(SPEC.layers * (lin[32] + decode_ms(32, 1024, 1) + 0.032))
    pre = {(r.prefill_tokens, r.prefill_ctx): r.iter_ms for r in rows if r.kind == "prefill"}
    assert len(pre) == 2 * len(CHUNKS)
    assert pre[(512, 512)] == pytest.approx(SPEC.layers * (lin[512] + prefill_ms(512, 512, 1) + 0.512))


def test_decode_grows_with_context_and_prefill_with_tokens(tree: Path) -> None:
    rows = vidur_rows(tree / "compute/h100" / L70, "llama-2-70b", "h100")
    at32 = sorted((r.decode_ctx, r.iter_ms) for r in rows if r.decode_seqs == 32)
    assert len(at32) == len(KVS)
    assert all(a[1] < b[1] for a, b in zip(at32, at32[1:], strict=False))
    whole = {r.prefill_tokens: r.iter_ms for r in rows if r.kind == "prefill" and r.prefill_ctx == 0}
    assert whole[1024] > whole[512] and whole[2048] > whole[1024]


def test_tensor_parallel_rows_add_the_all_reduce(tree: Path) -> None:
    rows = vidur_rows(tree / "compute/h100" / L70, "llama-2-70b", "h100", 2)
    lin = linear_ms(tree / "compute/h100" / L70 / "mlp.csv", SPEC, 2)
    row = next(r for r in rows if r.decode_seqs == 32 and r.decode_ctx == 32 * 1025)
    assert row.iter_ms > SPEC.layers * (lin[32] + decode_ms(32, 1024, 2) + 0.032)


def test_mismatched_model_device_or_tp_is_refused(tree: Path) -> None:
    folder = tree / "compute/h100" / L70
    with pytest.raises(UsageError) as e:
        vidur_rows(folder, "llama-3.1-8b", "h100")
    assert e.value.field == "profile" and "n_head" in str(e.value)
    with pytest.raises(UsageError) as e:
        vidur_rows(folder, "mixtral-8x7b", "h100")
    assert e.value.field == "profile"
    with pytest.raises(UsageError) as e:
        vidur_rows(folder, "llama-2-70b", "a100")
    assert e.value.field == "device"
    with pytest.raises(UsageError) as e:
        vidur_rows(folder, "llama-2-70b", "h100", 8)
    assert e.value.field == "tp" and "1, 2, 4" in str(e.value)


def test_missing_attention_profile_is_refused(data_dir: Path) -> None:
    folder = data_dir / VIDUR / "compute/h100" / L70
    if (folder / "attention.csv").exists():
        pytest.skip("this copy of Vidur has attention.csv")
    with pytest.raises(UsageError) as e:
        vidur_rows(folder, "llama-2-70b", "h100")
    assert e.value.field == "profile" and "attention.csv" in str(e.value)


def test_rows_round_trip(tree: Path, tmp_path: Path) -> None:
    rows = vidur_rows(tree / "compute/h100" / L70, "llama-2-70b", "h100", 4)
    write_rows(rows, tmp_path / "rows.csv")
    back = read_rows(tmp_path / "rows.csv")
    assert back == rows


def test_folders_name_the_profiles(data_dir: Path, tree: Path) -> None:
    everything = vidur_folders(data_dir / VIDUR, "h100", need_attention=False)
    assert L70 in everything and "microsoft/phi-2" in everything
    assert list(vidur_folders(tree, "h100")) == [L70]
    with pytest.raises(UsageError) as e:
        vidur_folders(tree, "a40")
    assert e.value.field == "device"


def test_real_attention_profile(data_dir: Path) -> None:
    folder = data_dir / VIDUR / "compute/h100" / L70
    if not (folder / "attention.csv").exists():
        pytest.skip("the shared copy of Vidur lacks attention.csv (see its PROVENANCE.md)")
    rows = vidur_rows(folder, "llama-2-70b", "h100")
    assert {r.kind for r in rows} == {"decode", "prefill"} and all(r.iter_ms > 0 for r in rows)
