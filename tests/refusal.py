"""What every refused command must look like (the project's bad-input rule): exit status 2, one line
on stderr holding the expected text, no traceback, nothing on stdout. And running a command in this
process, as `wattserve` would, for tables where a Python start per case would cost seconds."""

from __future__ import annotations

import pytest


def assert_refused(code: int, out: str, err: str, expect: str) -> None:
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    assert out == "", "a refused command printed a result or started something"
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert expect in lines[0], lines[0]


def run_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`wattserve ARGV` through `wattserve.cli.main`: exit code, stdout, stderr."""
    from wattserve.cli import main

    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err
