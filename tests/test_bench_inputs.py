"""`wattserve bench` with bad input, as a user runs it: one line on stderr naming the flag, exit 2,
no traceback, no table and no result file; every check happens before the first request.

Every case points --base-url at a closed local port, so a value that slipped through validation
would end in the connection error instead of the message the case expects."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from wattserve.cli import build_parser
from wattserve.schema.flag_table import BENCH

from refusal import assert_refused

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def closed_url() -> str:
    """The address of a local port that nothing listens on (bound, read, closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def bench(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wattserve", "bench", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=60)


def assert_bench_refused(p: subprocess.CompletedProcess, cwd: Path, before: set[Path], expect: str) -> None:
    assert_refused(p.returncode, p.stdout, p.stderr, expect)
    assert set(cwd.rglob("*")) == before, "a refused run wrote a file"


CASES = [
    ("request-rate-nan", ["--request-rate", "nan"], "--request-rate: nan"),
    ("request-rate-zero", ["--request-rate", "0"], "--request-rate: 0 is not allowed"),
    ("request-rate-tiny", ["--request-rate", "1e-300"], "--request-rate: the arrivals span 1"),
    ("request-rate-overflows", ["--request-rate", "1e-310"], "--request-rate: the arrivals span more seconds"),
    ("endpoint-embeddings", ["--endpoint", "/v1/embeddings"], "allowed: '/v1/completions' or '/v1/chat/completions'"),
    ("random-input-len-negative", ["--random-input-len", "-1"], "--random-input-len: -1"),
    ("random-output-len-zero", ["--random-output-len", "0"], "--random-output-len: 0"),
    ("goodput-negative", ["--goodput", "ttft:-5"], "--goodput: 'ttft:-5'"),
    ("goodput-no-ms", ["--goodput", "ttft"], "--goodput: 'ttft' is not KEY:MS"),
    ("goodput-not-a-number", ["--goodput", "ttft:abc"], "--goodput: 'ttft:abc'"),
    ("goodput-unknown-key", ["--goodput", "foo:5"], "--goodput: 'foo:5' is not KEY:MS"),
    ("goodput-twice", ["--goodput", "ttft:5", "ttft:6"], "ttft is given twice"),
    ("num-prompts-zero", ["--num-prompts", "0"], "--num-prompts: 0"),
    ("too-much-prompt-text", ["--num-prompts", "1000000", "--random-input-len", "1000"], "tokens of prompt text"),
    ("seed-negative", ["--seed", "-1"], "--seed: -1"),
    ("burstiness-nan", ["--burstiness", "nan"], "--burstiness: nan"),
    ("max-concurrency-zero", ["--max-concurrency", "0"], "--max-concurrency: 0"),
    ("percentile-metrics-unknown", ["--percentile-metrics", "ttft,foo"], "--percentile-metrics: unknown metric"),
    ("metric-percentiles-100", ["--metric-percentiles", "50,100"], "--metric-percentiles:"),
    ("base-url-not-http", ["--base-url", "ftp://x"], "--base-url: 'ftp://x'"),
    ("result-dir-is-a-file", ["--save-result", "--result-dir", "{file}"], "--result-dir:"),
    ("result-dir-under-a-file", ["--save-result", "--result-dir", "{file}/sub"], "--result-dir:"),
    ("result-dir-empty", ["--save-result", "--result-dir", ""], "--result-dir: '' is not a path"),
    ("result-filename-with-folder", ["--save-result", "--result-filename", "a/b.json"], "--result-filename:"),
    ("trace-binary", ["--trace", "{binary}"], "not UTF-8"),
    ("trace-latin-1", ["--trace", "{latin1}"], "not UTF-8"),
    ("trace-missing", ["--trace", "{missing}"], "trace"),
    ("request-timeout-zero", ["--request-timeout", "0"], "--request-timeout: 0 is not allowed; allowed: a finite"),
    ("request-timeout-nan", ["--request-timeout", "nan"], "--request-timeout: nan is not allowed"),
    ("request-timeout-negative", ["--request-timeout", "-1"], "--request-timeout: -1 is not allowed"),
    ("request-timeout-inf", ["--request-timeout", "inf"], "--request-timeout: inf is not allowed"),
    ("request-timeout-huge", ["--request-timeout", "1e300"], "--request-timeout: 1e+300 is not allowed"),
    ("request-timeout-not-a-number", ["--request-timeout", "abc"], "--request-timeout: invalid float value"),
    ("tokenizer-unknown", ["--tokenizer", "bytes"], "--tokenizer: 'bytes'"),
    ("allow-failures-takes-no-value", ["--allow-failures", "yes"], "unrecognized arguments: yes"),
]


@pytest.mark.parametrize(("args", "expect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_no_file(args: list[str], expect: str, closed_url: str,
                                                  tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder\n")
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "latin1.jsonl").write_bytes('{"timestamp": 0, "input_length": 5, "note": "caf\xe9"}\n'
                                            .encode("latin-1"))
    paths = {"file": tmp_path / "file", "binary": tmp_path / "binary.csv", "latin1": tmp_path / "latin1.jsonl",
             "missing": tmp_path / "missing.csv"}
    before = set(tmp_path.rglob("*"))
    argv = [a.format(**paths) for a in args]
    p = bench(tmp_path, "--base-url", closed_url, "--num-prompts", "2", *argv)
    assert_bench_refused(p, tmp_path, before, expect)


def test_an_unwritable_result_folder_is_refused_before_the_run(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Permissions cannot be taken away from root, so os.access stands in for a read-only folder."""
    from wattserve.errors import UsageError
    from wattserve.loadgen import bench as loadgen
    from wattserve.schema.bench import BenchConfig

    real = loadgen.os.access
    monkeypatch.setattr(loadgen.os, "access", lambda p, mode: Path(p) != tmp_path and real(p, mode))
    with pytest.raises(UsageError, match="--result-dir: cannot write to"):
        loadgen.result_folder(BenchConfig(save_result=True, result_dir=str(tmp_path / "new" / "deeper")))
    assert list(tmp_path.iterdir()) == []


def test_a_closed_port_is_one_line_and_no_table(closed_url: str, tmp_path: Path) -> None:
    before = set(tmp_path.rglob("*"))
    p = bench(tmp_path, "--base-url", closed_url, "--num-prompts", "3", "--save-result")
    assert_bench_refused(p, tmp_path, before, "--base-url: cannot connect to 127.0.0.1")


def test_an_infinite_rate_is_allowed(closed_url: str, tmp_path: Path) -> None:
    """inf sends every request at once (as vllm); it passes validation and meets the closed port."""
    p = bench(tmp_path, "--base-url", closed_url, "--num-prompts", "2", "--request-rate", "inf")
    assert_bench_refused(p, tmp_path, set(tmp_path.rglob("*")), "--base-url: cannot connect")


def test_help_describes_every_flag() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    actions = [a for a in sub.choices["bench"]._actions if a.option_strings and a.dest != "help"]
    assert {a.option_strings[0] for a in actions} == {f"--{f.name}" for f in BENCH}
    for a in actions:
        assert a.help and len(a.help) > 10, a.option_strings
    flag = {f.name: f for f in BENCH}
    assert "default inf" in flag["request-rate"].help
    assert "allowed: /v1/completions, /v1/chat/completions" in flag["endpoint"].help
    assert "default 600" in flag["request-timeout"].help
    assert "allowed: server, words" in flag["tokenizer"].help and "/tokenize" in flag["tokenizer"].help
    assert "server's tokens" in flag["random-input-len"].help


def test_readme_lists_every_bench_flag() -> None:
    text = README.read_text()
    section = text[text.index("`wattserve bench` takes"):]
    listed = set(re.findall(r"--[a-z][a-z-]*", section[:section.index("\n\n")]))
    assert {f"--{f.name}" for f in BENCH} <= listed, {f"--{f.name}" for f in BENCH} - listed
