"""`wattserve calibrate --profile TABLE --out PROFILE` (issue 12): the fit recovers known constants,
reports held-out rows apart, and refuses bad tables cleanly."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from wattserve.perf.iteration_table import IterationRow, read_rows, write_rows
from wattserve.perf.perf_profile import load_profile
from wattserve.perf.profile_fit import fit_profile, predict_ms, split

from refusal import assert_refused, run_in_process

TRUE = load_profile("default").with_latency(eff_kv=0.5, seq_overhead_s=3e-5, layer_overhead_s=4e-6,
                                            step_overhead_s=8e-4)


def grid(device: str = "h100", model: str = "llama-3.1-8b", noise: float = 0.0) -> list[IterationRow]:
    rng = random.Random(3)
    rows = [IterationRow("test", device, model, 1, 0, 0, 0, b, b * c, 1.0)
            for b in (1, 4, 16, 64, 128) for c in (128, 512, 2048)]
    rows += [IterationRow("test", device, model, 1, n * s, s, k * s, 0, 0, 1.0)
             for n in (128, 512, 2048) for s in (1, 2) for k in (0, 512)]
    rows += [IterationRow("test", device, model, 1, 256, 1, 0, b, b * 600, 1.0) for b in (8, 32)]
    return [replace(r, iter_ms=predict_ms(TRUE, r) * (1 + rng.gauss(0, noise))) for r in rows]


def test_fit_recovers_the_constants_that_made_the_table() -> None:
    res = fit_profile(grid(), load_profile("default"), "t", "test", holdout=0.25, seed=1)
    assert res.median_abs(False) < 0.01
    assert res.median_abs(True) < 0.01
    assert res.profile.fitted_on == ("h100",)
    assert res.profile.fit_error["held_out_median_abs"] < 0.01
    assert res.profile.latency.eff_kv == pytest.approx(0.5, rel=0.1)


def test_held_out_rows_are_not_fitted() -> None:
    """A held-out row that lies (10x its true time) moves no fitted constant: the held-out error
    shows it, the fitted rows do not."""
    rows = grid()
    fit_idx, out_idx = split(rows, 0.25, 1)
    lied = list(rows)
    lied[out_idx[0]] = replace(rows[out_idx[0]], iter_ms=rows[out_idx[0]].iter_ms * 10)
    res = fit_profile(lied, load_profile("default"), "t", "test", holdout=0.25, seed=1)
    assert res.median_abs(False) < 0.01
    assert max(abs(e.rel_error) for e in res.errors if e.held_out) > 0.8
    assert set(fit_idx).isdisjoint(out_idx) and sorted(fit_idx + out_idx) == list(range(len(rows)))


def test_cli_fits_and_the_profile_drives_the_simulator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table, out = tmp_path / "t.csv", tmp_path / "p.json"
    write_rows(grid(noise=0.02), table)
    code, stdout, err = run_in_process(["calibrate", "--profile", str(table), "--out", str(out)], capsys)
    assert code == 0, err
    assert "held out" in stdout
    prof = json.loads(out.read_text())
    assert prof["name"] == "p" and prof["fitted_on"] == ["h100"] and prof["fit_error"]["held_out_median_abs"] < 0.1
    code, stdout, err = run_in_process(["simulate", "--perf-profile", str(out), "--num-requests", "20", "--json"],
                                       capsys)
    assert code == 0, err
    assert json.loads(stdout)["perf_profile"] == "p"


@pytest.mark.parametrize(("content", "expect"), [
    ("engine,device\n", "lacks column(s)"),
    ("engine,device,model,tp,prefill_tokens,prefill_seqs,prefill_ctx,decode_seqs,decode_ctx,iter_ms\n"
     "x,h100,llama-3.1-8b,1,0,0,0,4,400,-3\n", "iter_ms='-3' is not allowed"),
    ("engine,device,model,tp,prefill_tokens,prefill_seqs,prefill_ctx,decode_seqs,decode_ctx,iter_ms\n"
     "x,h100,llama-3.1-8b,1,0,0,0,0,0,3\n", "computes no tokens"),
    ("engine,device,model,tp,prefill_tokens,prefill_seqs,prefill_ctx,decode_seqs,decode_ctx,iter_ms\n"
     "x,h100,llama-3.1-8b,1,0,0,0,2.5,0,3\n", "decode_seqs='2.5' is not allowed"),
    ("engine,device,model,tp,prefill_tokens,prefill_seqs,prefill_ctx,decode_seqs,decode_ctx,iter_ms\n"
     + "x,h100,gpt-9,1,0,0,0,4,400,3\n" * 6, "a row's model: unknown"),
    ("engine,device,model,tp,prefill_tokens,prefill_seqs,prefill_ctx,decode_seqs,decode_ctx,iter_ms\n"
     "x,h100,llama-3.1-8b,1,0,0,0,4,400,3\n", "rows leave"),
])
def test_bad_tables_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expect: str) -> None:
    table, out = tmp_path / "t.csv", tmp_path / "p.json"
    table.write_text(content)
    code, stdout, err = run_in_process(["calibrate", "--profile", str(table), "--out", str(out)], capsys)
    assert_refused(code, stdout, err, expect)
    assert "--profile:" in err
    assert not out.exists()


def test_calibrate_flags_are_checked_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "t.csv"
    write_rows(grid(), table)
    out = str(tmp_path / "p.json")
    for argv, expect in (([], "--out: missing"), (["--out", out, "--holdout", "1"], "--holdout: 1.0 is not allowed"),
                         (["--out", out, "--base", "nope"], "--base: unknown perf profile"),
                         (["--out", str(tmp_path / "no" / "p.json")], "--out: the folder")):
        assert_refused(*run_in_process(["calibrate", "--profile", str(table), *argv], capsys), expect)
    assert_refused(*run_in_process(["calibrate", "--profile", str(tmp_path / "missing.csv"), "--out", out], capsys),
                   "--profile: cannot read")
    assert read_rows(table)


def test_fit_recovers_the_masked_share_and_the_mixed_overhead() -> None:
    """A CPU engine that computes each prompt chunk's full rectangle and pays extra for mixed steps
    (as ours does, perf/latency.py): the fit finds both, and a model without them cannot match."""
    true = TRUE.with_latency(eff_gemm=0.5, eff_mem=2.0, eff_kv=2.0, eff_attn=0.1, attn_masked_share=1.0,
                             mixed_overhead_s=3e-4)
    rows = [replace(r, iter_ms=predict_ms(true, r)) for r in grid(device="cpu", model="tiny")]
    res = fit_profile(rows, load_profile("default"), "t", "test", holdout=0.2, seed=1)
    assert res.median_abs(True) < 0.02
    assert res.profile.latency.attn_masked_share == pytest.approx(1.0, abs=0.1)
    assert res.profile.latency.mixed_overhead_s == pytest.approx(3e-4, rel=0.2)
    blind = true.with_latency(attn_masked_share=0.0, mixed_overhead_s=0.0)
    assert max(abs(predict_ms(blind, r) / r.iter_ms - 1) for r in rows) > 0.2


def test_cpu_tables_may_exceed_a_gpus_efficiency_bound() -> None:
    """The catalog's `cpu` device is nominal: its efficiencies may pass 1, a GPU's may not."""
    fast = load_profile("default").with_latency(eff_mem=3.0, eff_kv=3.0)
    rows = [replace(r, iter_ms=predict_ms(fast, r)) for r in grid(device="cpu", model="small")]
    res = fit_profile(rows, load_profile("default"), "t", "test", holdout=0.2)
    assert res.median_abs(True) < 0.02
    gpu_rows = [replace(r, iter_ms=predict_ms(fast, replace(r, device="h100"))) for r in grid()]
    assert fit_profile(gpu_rows, load_profile("default"), "t", "test").profile.latency.eff_mem <= 1.0


def test_masked_pairs_survive_the_table_and_are_derived_when_absent(tmp_path: Path) -> None:
    """A step log's row carries its masked pairs (two chunks of 30 and 10: 435 + 45); a table without
    the column derives them as if the prompts were equal, as a grid profile's are."""
    logged = IterationRow("test", "cpu", "tiny", 1, 40, 2, 0, 0, 0, 1.0, prefill_masked_pairs=480.0)
    grid_row = IterationRow("test", "cpu", "tiny", 1, 40, 2, 0, 0, 0, 1.0)
    write_rows([logged, grid_row], tmp_path / "t.csv")
    back = read_rows(tmp_path / "t.csv")
    assert back == [logged, grid_row]
    assert back[0].shape.prefill_masked_pairs == 480.0
    assert back[1].shape.prefill_masked_pairs == 2 * 20 * 19 / 2
