"""`wattserve profile --kind iterations`: one row per grid shape in the iteration table's format, each
row the batch our engine actually ran, timed under the thread count asked for, and every bad input
refused as one line naming its flag."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import astuple, fields
from pathlib import Path

import pytest

from wattserve.catalog.gpus import GPUS
from wattserve.catalog.models import BatchShape
from wattserve.experiments import iteration_profile as ip
from wattserve.perf.iteration_table import IterationRow, read_rows
from wattserve.schema.profile import ProfileConfig
from wattserve.seam.governor import StepDecision, StepView

from refusal import assert_refused, run_in_process

ROOT = Path(__file__).resolve().parents[1]
GRID = ["--prefill-tokens", "16,32", "--prefill-seqs", "1,2", "--prefill-ctx", "0,16", "--decode-seqs", "1,4",
        "--decode-ctx", "16,64", "--mixed-tokens", "16", "--mixed-seqs", "2", "--mixed-ctx", "32"]
EXPECTED = ({(s * t, s, s * c, 0, 0) for s in (1, 2) for t in (16, 32) for c in (0, 16)}
            | {(0, 0, 0, b, b * c) for b in (1, 4) for c in (16, 64)} | {(16, 1, 0, 2, 64)})
"""(prefill_tokens, prefill_seqs, prefill_ctx, decode_seqs, decode_ctx) of every row GRID makes."""


def _key(r: IterationRow) -> tuple[int, int, int, int, int]:
    return (r.prefill_tokens, r.prefill_seqs, r.prefill_ctx, r.decode_seqs, r.decode_ctx)


def test_table_has_one_row_per_grid_shape_and_reads_back(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "iter.csv"
    code, stdout, err = run_in_process(["profile", "--kind", "iterations", "--backend", "runtime", "--model", "tiny",
                                        *GRID, "--repeats", "2", "--warmup", "1", "--out", str(out)], capsys)
    assert code == 0, err
    assert f"wrote {out}: {len(EXPECTED)} shapes" in stdout
    assert out.read_text().splitlines()[0].split(",") == [f.name for f in fields(IterationRow)]
    rows = read_rows(out)
    assert len(rows) == len(EXPECTED) and {_key(r) for r in rows} == EXPECTED
    assert {(r.engine, r.device, r.model, r.tp, r.clock_mhz, r.watts) for r in rows} == {
        ("wattserve-runtime", "cpu", "tiny", 1, None, None)}
    assert all(r.iter_ms > 0 for r in rows)
    order = [(r.prefill_seqs, r.prefill_tokens, r.prefill_ctx, r.decode_seqs, r.decode_ctx) for r in rows]
    assert order == sorted(order)
    assert {r.kind for r in rows} == {"prefill", "decode", "mixed"}
    assert [p.name for p in tmp_path.iterdir()] == ["iter.csv"], "no partial file is left behind"


class _Recorder:
    """A governor that asks to be asked every step and keeps what each step ran and on how many
    threads."""

    def __init__(self) -> None:
        self.seen: list[tuple[BatchShape, int]] = []

    def decide(self, view: StepView) -> StepDecision:
        import torch

        self.seen.append((view.shape, torch.get_num_threads()))
        return StepDecision(None, hold_iters=1)


def test_each_row_is_the_batch_the_engine_ran_on_the_threads_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's own view of every timed step (its step governor's) is the shape its row names,
    prefill attention pairs included, each timed step follows an untimed step of its own shape, and
    every step ran with --threads torch threads, which are restored afterwards."""
    import torch

    from wattserve.governors.max_clock import MaxClockGovernor

    recorder = _Recorder()
    monkeypatch.setattr(MaxClockGovernor, "decide", lambda self, view: recorder.decide(view))
    threads = 2 if torch.get_num_threads() != 2 else 1
    before = torch.get_num_threads()
    cfg = ProfileConfig.model_validate({
        "kind": "iterations", "backend": "runtime", "model": "tiny", "threads": threads, "repeats": 2, "warmup": 1,
        "out": "unused.csv", **{GRID[i][2:].replace("-", "_"): GRID[i + 1] for i in range(0, len(GRID), 2)}})
    rows = ip.profile_iterations(cfg)
    assert torch.get_num_threads() == before
    assert len(recorder.seen) == len(EXPECTED) * 3 * 2
    warm, timed = recorder.seen[0::2], recorder.seen[1::2]
    assert [astuple(s) for s, _ in warm] == [astuple(s) for s, _ in timed]
    assert {n for _, n in recorder.seen} == {threads}
    assert {astuple(r.shape) for r in rows} == {astuple(s) for s, _ in recorder.seen}


def test_decode_steps_cost_more_with_a_larger_batch_and_context() -> None:
    """On `small`, 32 sequences of 512 tokens take several times one sequence of 16 (about 15x
    measured on 2 shared cores; the bound leaves room for a noisy machine)."""
    cfg = ProfileConfig(kind="iterations", backend="runtime", model="small", prefill_tokens="", mixed_tokens="",
                        decode_seqs="1,32", decode_ctx="16,512", repeats=3, warmup=1, out="unused.csv")
    ms = {(r.decode_seqs, r.decode_ctx // r.decode_seqs): r.iter_ms for r in ip.profile_iterations(cfg)}
    assert set(ms) == {(1, 16), (1, 512), (32, 16), (32, 512)}
    assert ms[(32, 512)] > 4 * ms[(1, 16)], ms


def test_default_grid_has_prefill_chunked_decode_and_mixed_rows() -> None:
    from wattserve.runtime.engine.engine import EngineArgs

    assert EngineArgs.model_fields["block_size"].default == ip.BLOCK, "profile the block size serving uses"
    cfg = ProfileConfig(kind="iterations", backend="runtime", out="unused.csv")
    grid = ip.shapes(cfg)
    assert cfg.iteration_models == ("tiny",)
    assert len(grid) == len(set(grid)) == 4 * 3 * 2 + 4 * 3 + 2 * 2
    assert {s.prefill_ctx > 0 for s in grid if s.prefill_seqs and not s.decode_seqs} == {False, True}
    assert max(s.decode_seqs for s in grid) == 64 and max(s.decode_ctx for s in grid) == 1024
    assert sum(1 for s in grid if s.prefill_seqs and s.decode_seqs) == 4


@pytest.mark.parametrize(("raw", "name"), [
    ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H100 PCIe", "h100-pcie"), ("NVIDIA H200", "h200"),
    ("NVIDIA A100-SXM4-80GB", "a100"), ("NVIDIA A100-SXM4-40GB", "a100-40gb"), ("AMD Instinct MI300X", "mi300x"),
    ("Tesla T4", "Tesla T4"),
])
def test_cuda_device_names_map_to_catalog_gpus(raw: str, name: str) -> None:
    from wattserve.runtime.engine.catalog_device import device_name

    assert device_name(raw) == name
    assert name in GPUS or name == raw


@pytest.mark.parametrize(("argv", "expect"), [
    (["--backend", "runtime", "--model", "gpt-5"], "--model: unknown model 'gpt-5'; allowed:"),
    (["--backend", "runtime", "--caps", "100:200:50"],
     "--caps: applies to --kind operating-points only; allowed with --kind iterations: leave it out"),
    (["--backend", "runtime", "--tp", "4"], "--tp: the engine runs in one process; allowed with --kind iterations: 1"),
    (["--backend", "runtime", "--decode-ctx", "1,16"],
     "--decode-ctx: '1,16': allowed: comma-separated integers from 2 to 65536"),
    (["--backend", "runtime", "--prefill-seqs", ""],
     "--prefill-seqs: '' is empty; allowed: comma-separated integers from 1 to 4096"),
    (["--backend", "runtime", "--prefill-ctx", "4000"],
     "--prefill-ctx: the grid's longest sequence (4512 tokens, then one generated and room for another) exceeds "
     "tiny's 4096 positions"),
    (["--backend", "runtime", "--prefill-tokens", "", "--decode-seqs", "", "--mixed-tokens", ""],
     "--prefill-tokens: the grid has no shape"),
    (["--backend", "runtime", "--model", "small", "--decode-seqs", "4096", "--decode-ctx", "4000"],
     "--decode-seqs: the grid's largest batch needs 188.3 GiB of KV cache for small, more than the"),
    (["--backend", "runtime", "--threads", "0"], "--threads: 0 is not allowed; allowed: an integer from 1 to 1024"),
    (["--backend", "runtime", "--out", "p.parquet"], "--out: 'p.parquet': --kind iterations writes CSV"),
    (["--backend", "runtime", "--device", "tpu"], "--device: 'tpu' is not allowed; allowed: 'cpu' or 'cuda'"),
    (["--kind", "frequency"], "--kind: 'frequency' is not allowed; allowed: 'operating-points' or 'iterations'"),
    (["--kind", "operating-points", "--repeats", "3"],
     "--repeats: applies to --kind iterations only; allowed with --kind operating-points: leave it out"),
])
def test_bad_inputs_are_refused_naming_the_flag(argv: list[str], expect: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    kind = [] if "--kind" in argv else ["--kind", "iterations"]
    out = [] if "--out" in argv else ["--out", str(tmp_path / "p.csv")]
    args = ["profile", *kind, *argv, *out]
    assert_refused(*run_in_process(args, capsys), expect)
    assert list(tmp_path.iterdir()) == []


def test_cuda_without_a_gpu_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert_refused(*run_in_process(["profile", "--kind", "iterations", "--backend", "runtime", "--device", "cuda",
                                    "--out", str(tmp_path / "p.csv")], capsys),
                   "--device: 'cuda' asked for, but torch sees no CUDA device; allowed here: cpu")


@pytest.mark.parametrize(("argv", "expect"), [
    (["--backend", "sim"], "--backend: --kind iterations times our own engine; allowed with --kind iterations: "
                           "runtime (got sim)"),
    (["--backend", "runtime", "--model", "mixtral-8x7b"],
     "--model: unknown runtime model 'mixtral-8x7b'; allowed with --kind iterations on --device cpu: tiny, "
     "tiny-moe, small"),
])
def test_the_command_exits_2_with_one_line(argv: list[str], expect: str, tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "wattserve", "profile", "--kind", "iterations", *argv, "--out",
                        str(tmp_path / "p.csv")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert_refused(p.returncode, p.stdout, p.stderr, expect)
    assert list(tmp_path.iterdir()) == []
