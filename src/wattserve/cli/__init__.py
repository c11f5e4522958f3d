"""The `wattserve` command line: one module per subcommand, a flag table generated from the schema.

Every user error is one line on stderr and exit status 2 (no traceback); results are written only
when the run completes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from wattserve.cli import (
    agent,
    bench,
    calibrate,
    compare,
    estimate,
    fit,
    manage,
    profile,
    serve,
    simulate,
    validate,
)
from wattserve.cli.parser import Parser
from wattserve.errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="wattserve", description="Serve LLMs under a power budget: simulate, estimate, calibrate, "
                "compare, serve, bench, profile, fit, validate; agent and manage drive an existing fleet.")
    p.add_argument("--version", action="version", version="wattserve 0.1.0")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in (simulate, estimate, calibrate, compare, serve, bench, profile, fit, validate, agent, manage):
        command.add(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args, started))
    except UsageError as e:
        print(f"wattserve {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wattserve {args.command}: interrupted", file=sys.stderr)
        return 130


__all__ = ["build_parser", "main"]
