"""A run's own config.yaml reruns it exactly (issue 16; the README's promise): every kind of
`simulate` run, rerun with `--config DIR/config.yaml` from another working folder, gives a
byte-identical summary.json (its wall time aside), the same requests.csv, and writes the same
config.yaml again.

The first run is given relative paths (a trace named from the working folder), so a config.yaml that
stored them unresolved, or that dropped a flag (a budget, a policy, a layout, a governor), reruns a
different scenario and fails here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from wattserve.cli import main

KINDS: dict[str, list[str]] = {
    "plain": ["--duration", "120"],
    "trace": ["--trace", "trace.csv", "--duration", "240", "--rate", "6"],
    "trace-mooncake": ["--trace", "trace.jsonl", "--num-requests", "300"],
    "budget-policy": ["--rate", "150", "--duration", "30", "--budget", "4000", "--policy", "rapid"],
    "budget-trace": ["--rate", "150", "--duration", "30", "--policy", "rapid", "--budget-trace", "budget.csv",
                     "--target", "target.csv"],
    "budget-shape": ["--rate", "150", "--duration", "30", "--budget", "4000", "--policy", "rapid", "--budget-trace",
                     "demand-response:start=10,minutes=0.25,level=0.6", "--target", "900"],
    "colocated": ["--colocated", "8", "--rate", "30", "--duration", "60"],
    "governed": ["--governor", "tpot-slack", "--duration", "60", "--seed", "7"],
    "repeated-slo": ["--num-requests", "200", "--repeat", "3", "--slo-ttft-ms", "0", "--power-cap", "400"],
}


def summary_text(folder: Path) -> str:
    """summary.json without its wall time, the one field a rerun cannot repeat."""
    lines = (folder / "summary.json").read_text().splitlines()
    kept = [ln for ln in lines if not ln.lstrip().startswith('"wall_time_s"')]
    assert len(kept) == len(lines) - 1
    return "\n".join(kept)


def simulate(*args: str) -> None:
    assert main(["simulate", "--json", "--no-plots", *args]) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_run_reruns_from_its_own_config_byte_for_byte(kind: str, data_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    first, elsewhere = tmp_path / "first", tmp_path / "elsewhere"
    first.mkdir()
    elsewhere.mkdir()
    shutil.copy(data_dir / "traces/azure_llm_2023/AzureLLMInferenceTrace_code.csv", first / "trace.csv")
    with (data_dir / "traces/mooncake_fast25/conversation_trace.jsonl").open() as src:
        (first / "trace.jsonl").write_text("".join(next(src) for _ in range(2000)))
    (first / "budget.csv").write_text("time_s,watts\n0,4000\n10,2600\n20,4000\n")
    (first / "target.csv").write_text("time_s,tok_s\n0,900\n15,1200\n")
    monkeypatch.chdir(first)
    simulate(*KINDS[kind], "--out", "run")
    printed = json.loads(capsys.readouterr().out)
    monkeypatch.chdir(elsewhere)
    simulate("--config", str(first / "run" / "config.yaml"), "--out", "rerun")
    capsys.readouterr()
    a, b = first / "run", elsewhere / "rerun"
    assert summary_text(b) == summary_text(a)
    assert (b / "requests.csv").read_bytes() == (a / "requests.csv").read_bytes()
    assert (b / "config.yaml").read_text() == (a / "config.yaml").read_text()
    summary = json.loads((a / "summary.json").read_text())
    assert summary["completed"] > 0 and printed["completed"] == summary["completed"]
    if kind.startswith("budget-") and kind != "budget-policy":
        assert summary["budget_breaches"] == 0 and summary["budget_w"] == 4000
        assert (b / "actuations.csv").read_bytes() == (a / "actuations.csv").read_bytes()
    if kind == "budget-policy":
        assert summary["policy"] == "rapid" and summary["budget_w"] == 4000 and summary["cap_changes"] > 0
        assert (b / "actuations.csv").read_bytes() == (a / "actuations.csv").read_bytes()


def test_a_rerun_into_a_used_folder_leaves_none_of_the_old_files(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A budget run writes actuations.csv and plots; a plain run into the same folder afterwards
    must not leave them beside its own files as if they were its own. A user's file stays."""
    out = tmp_path / "run"
    assert main(["simulate", "--rate", "150", "--duration", "20", "--budget", "4000", "--policy", "rapid",
                 "--out", str(out)]) == 0
    assert {"actuations.csv", "cluster_power.png", "latency_cdf.png"} <= {f.name for f in out.iterdir()}
    (out / "notes.txt").write_text("mine\n")
    assert main(["simulate", "--duration", "20", "--no-plots", "--out", str(out)]) == 0
    capsys.readouterr()
    assert sorted(f.name for f in out.iterdir()) == ["clocks.csv", "config.yaml", "notes.txt", "power.csv",
                                                     "requests.csv", "summary.json"]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["run"], "a staging folder was left behind"
