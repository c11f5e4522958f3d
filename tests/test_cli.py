"""The command line as a user runs it: real subprocesses, exit codes, files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wattserve", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_simulate_default_prints_summary() -> None:
    p = run("simulate", "--duration", "60")
    assert p.returncode == 0, p.stderr
    assert "SLO attainment" in p.stdout and "Request throughput" in p.stdout


def test_simulate_writes_outputs_and_rerun_is_identical(tmp_path: Path) -> None:
    out = tmp_path / "run"
    p = run("simulate", "--duration", "60", "--rate", "8", "--out", str(out), "--json")
    assert p.returncode == 0, p.stderr
    names = {f.name for f in out.iterdir()}
    assert names == {"config.yaml", "summary.json", "requests.csv", "power.csv", "clocks.csv", "latency_cdf.png",
                     "cluster_power.png"}
    s = json.loads((out / "summary.json").read_text())
    for key in ("completed", "failed", "duration", "request_throughput", "output_throughput", "mean_ttft_ms",
                "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms", "mean_itl_ms",
                "median_itl_ms", "p99_itl_ms", "mean_e2el_ms", "median_e2el_ms", "p99_e2el_ms", "slo_attainment",
                "gpu_energy_j", "gpu_avg_power_w", "max_cluster_power_w", "output_toks_per_joule", "wall_time_s"):
        assert key in s, key
    assert s["gpu_energy_j"] == pytest.approx(s["gpu_energy_from_series_j"], rel=1e-9)
    rows = (out / "requests.csv").read_text().splitlines()
    assert len(rows) == s["completed"] + s["failed"] + 1
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["workload"]["rate"] == 8 and cfg["cluster"]["prefill"] == 4
    again = run("simulate", "--config", str(out / "config.yaml"), "--json")
    s2 = json.loads(again.stdout)
    for key in ("completed", "mean_ttft_ms", "p99_tpot_ms", "gpu_energy_j"):
        assert s2[key] == s[key]
    power = (out / "power.csv").read_text().splitlines()
    assert power[0] == "time_s,gpu,instance,role,power_w" and len(power) > 8


def test_an_slo_can_be_dropped() -> None:
    both = json.loads(run("simulate", "--duration", "60", "--json", "--slo-tpot-ms", "5").stdout)
    ttft_only = json.loads(run("simulate", "--duration", "60", "--json", "--slo-tpot-ms", "5", "--slo-tpot-ms",
                               "0").stdout)
    assert ttft_only["slo_tpot_ms"] is None and both["slo_tpot_ms"] == 5
    assert ttft_only["slo_attainment"] > both["slo_attainment"]


def test_one_flag_changes_the_answer() -> None:
    a = json.loads(run("simulate", "--duration", "60", "--json").stdout)
    b = json.loads(run("simulate", "--duration", "60", "--json", "--power-cap", "300").stdout)
    assert b["max_cluster_power_w"] <= 8 * 300 + 1e-6 < a["max_cluster_power_w"]
    assert b["gpu_energy_j"] < a["gpu_energy_j"]


def test_colocated_and_trace(data_dir: Path) -> None:
    trace = data_dir / "traces/azure_llm_2023/AzureLLMInferenceTrace_code.csv"
    p = run("simulate", "--colocated", "8", "--trace", str(trace), "--duration", "300", "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["completed"] > 500 and s["failed"] == 0


def test_policy_help_lists_every_controller() -> None:
    from wattserve.control.registry import CONTROLLERS
    from wattserve.governors.registry import GOVERNORS

    text = " ".join(run("simulate", "--help").stdout.split())
    for name in (*CONTROLLERS.names(), *GOVERNORS.names()):
        assert name in text, name
    assert "colocated" not in text.split("--policy", 1)[1].split("--trace", 1)[0]


def test_actuations_csv_quotes_notes(tmp_path: Path) -> None:
    import csv

    from wattserve.metrics.outputs import write_actuations_csv
    from wattserve.seam import Actuation, ActuationLog

    log = ActuationLog()
    note = 'refused: sum 4,100 W > budget "4,000 W"'
    log.add(Actuation(time_s=1.5, kind="cap", target=3, value=450.0, status="refused", note=note))
    path = tmp_path / "actuations.csv"
    write_actuations_csv(path, log)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["note"] == note and rows[0]["target"] == "3"


def test_estimate_json() -> None:
    p = run("estimate", "--gpu", "h100", "--model", "llama-3.1-8b", "--tp", "1", "--prefill-tokens", "2048",
            "--json")
    full = json.loads(p.stdout)
    assert set(full) >= {"latency_ms", "power_w", "clock_mhz"}
    capped = json.loads(run("estimate", "--prefill-tokens", "2048", "--power-cap", "350", "--json").stdout)
    assert capped["power_w"] <= 350 and capped["clock_mhz"] < full["clock_mhz"]
    assert capped["latency_ms"] / full["latency_ms"] == pytest.approx(1.3, abs=0.1)
    d = json.loads(run("estimate", "--decode-batch", "32", "--context", "1000", "--clock", "1200", "--json").stdout)
    assert d["clock_mhz"] <= 1200


def test_calibrate_prints_table(data_dir: Path) -> None:
    p = run("calibrate", "--data", str(data_dir))
    assert p.returncode == 0
    assert "| itl_ms | ML.ENERGY v3, H100 |" in p.stdout


def test_simulate_under_a_budget_with_a_policy(tmp_path: Path) -> None:
    out = tmp_path / "pol"
    p = run("simulate", "--rate", "150", "--duration", "30", "--budget", "4000", "--policy", "rapid", "--out", str(out),
            "--json", "--no-plots")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["policy"] == "rapid" and s["max_sum_caps_w"] <= 4000 and s["cap_changes"] > 0
    rows = (out / "actuations.csv").read_text().splitlines()
    assert rows[0].startswith("time_s,kind,target") and len(rows) > 1
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["control"] == {"budget_w": 4000, "policy": "rapid"}
    again = json.loads(run("simulate", "--config", str(out / "config.yaml"), "--json").stdout)
    for key in ("policy", "budget_w", "completed", "gpu_energy_j", "max_sum_caps_w", "cap_changes", "role_changes"):
        assert again[key] == s[key], key
    bad = run("simulate", "--budget", "1000", "--policy", "static")
    assert bad.returncode == 2 and "minimum caps" in bad.stderr


def test_every_flag_of_every_subcommand_has_help_with_its_default() -> None:
    """Each flag says what it is; one with a default or a fixed set of values says which (in the
    flag's own help, generated from the schema for simulate, serve and bench)."""
    import argparse

    from wattserve.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"simulate", "estimate", "calibrate", "compare", "serve", "bench", "profile", "fit",
                                "validate", "agent", "manage"}
    for command, parser in sub.choices.items():
        for a in parser._actions:
            if not a.option_strings or a.dest == "help":
                continue
            name = f"{command} {a.option_strings[0]}"
            assert a.help and len(a.help) > 10, name
            if a.default not in (None, False) and not isinstance(a, argparse._StoreTrueAction):
                assert "default" in a.help, name
            if a.choices:
                assert "allowed" in a.help, name
    from wattserve.schema.flag_table import SIMULATE

    helps = {f.name: f.help for f in SIMULATE}
    assert "default 1000" in helps["slo-ttft-ms"] and "allowed: azure, mooncake" in helps["trace-format"]


def test_readme_lists_every_simulate_flag() -> None:
    import re

    from wattserve.schema.flag_table import SIMULATE

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("Flags: `--gpu`"):]
    listed = set(re.findall(r"--[a-z][a-z-]*", section[:section.index("\n\n")]))
    wanted = {f"--{f.name}" for f in SIMULATE} | {"--config", "--out", "--json", "--no-plots"}
    assert wanted <= listed, wanted - listed


def test_simulate_runs_planner_concurrent_under_its_budget(tmp_path: Path) -> None:
    """The policy a user picks by name builds a cluster that switches into and out of concurrent."""
    import json

    p = run("simulate", "--policy", "planner-concurrent", "--budget", "4000", "--num-requests", "600",
            "--rate", "120", "--out", str(tmp_path), "--no-plots")
    assert p.returncode == 0, p.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["slo_attainment"] > 0.9
    assert summary["max_sum_caps_w"] <= 4000 + 1e-6
