"""`wattserve calibrate`: model error against ML.ENERGY, Vidur and Splitwise measurements."""

from __future__ import annotations

import argparse
from pathlib import Path

from wattserve.cli.parser import DEFAULT_DATA
from wattserve.errors import UsageError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="model error against ML.ENERGY, Vidur and Splitwise data",
                       description="Compare the latency and power models with measurements and print (or write) "
                                   "the markdown table in docs/calibration.md.")
    p.add_argument("--data", default=str(DEFAULT_DATA), metavar="DIR",
                   help=f"the shared data folder [default {DEFAULT_DATA}, beside the repository]")
    p.add_argument("--out", metavar="FILE", help="write the markdown to this file instead of printing it "
                   "[default: print]")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace, started: float) -> int:
    from wattserve.metrics.outputs import check_out_file
    from wattserve.perf.calibration import markdown_report

    if args.out is not None:
        check_out_file(args.out, "--out")
    data = Path(args.data)
    if not (data / "anchors/mlenergy/v3_leaderboard/v3_configs_flat.csv").is_file():
        raise UsageError(f"{str(data)!r} has no anchors/mlenergy/v3_leaderboard/v3_configs_flat.csv; "
                         "allowed: the shared data folder", "--data")
    text = markdown_report(data)
    if args.out is not None:
        try:
            Path(args.out).write_text(text)
        except OSError as e:
            raise UsageError(f"cannot write {args.out!r} ({e.strerror})", "--out") from None
    else:
        print(text, end="")
    return 0
