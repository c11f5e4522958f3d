"""`wattserve calibrate`: model error against ML.ENERGY, Vidur and Splitwise measurements; with
`--profile TABLE`, fit a perf profile to a measured iteration table and report its held-out error."""

from __future__ import annotations

import argparse
from pathlib import Path

from wattserve.cli.parser import DEFAULT_DATA
from wattserve.errors import UsageError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="model error against public data, or fit a perf profile to a table",
                       description="Without --profile: compare the latency and power models with measurements and "
                                   "print (or write) the markdown table in docs/calibration.md. With --profile TABLE: "
                                   "fit a perf profile's latency constants to a measured iteration table (from "
                                   "`wattserve profile --kind iterations`, a CSV in the documented format, or a "
                                   "Vidur compute-profile folder), hold out a fraction of the rows, print the "
                                   "held-out error table and write the profile to --out.")
    p.add_argument("--data", default=str(DEFAULT_DATA), metavar="DIR",
                   help=f"the shared data folder [default {DEFAULT_DATA}, beside the repository]")
    p.add_argument("--out", metavar="FILE", help="without --profile: write the markdown to this file instead "
                   "of printing it [default: print]; with --profile: the perf profile JSON to write (required)")
    p.add_argument("--validate", metavar="FILE", help="without --profile: also report this validate.json "
                   "(from `wattserve validate`) [default: none]")
    p.add_argument("--profile", metavar="TABLE", help="fit a perf profile to this iteration table (CSV) or Vidur "
                   "compute-profile folder (e.g. .../vidur/data/profiling/compute/h100/meta-llama/Llama-2-70b-hf)")
    p.add_argument("--holdout", type=float, default=0.2, metavar="SHARE",
                   help="share of the table's rows held out of the fit, 0 <= SHARE < 1 [default 0.2]")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the held-out draw, >= 0 [default 0]")
    p.add_argument("--base", default="default", metavar="NAME|FILE",
                   help="perf profile the fit starts from and keeps the power constants of [default: default]")
    p.add_argument("--name", metavar="NAME", help="the new profile's name [default: the --out file's stem]")
    p.add_argument("--tp", type=int, default=1, metavar="N", help="with a Vidur folder: the TP degree of the "
                   "rows to import [default 1]")
    p.add_argument("--model", metavar="NAME", help="with a Vidur folder: the catalog model it profiles")
    p.add_argument("--gpu", metavar="NAME", help="with a Vidur folder: the catalog GPU it was taken on")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace, started: float) -> int:
    from wattserve.metrics.outputs import check_out_file
    from wattserve.perf.calibration import markdown_report

    if args.out is not None:
        check_out_file(args.out, "--out")
    if args.profile is not None:
        return _fit(args)
    data = Path(args.data)
    if not (data / "anchors/mlenergy/v3_leaderboard/v3_configs_flat.csv").is_file():
        raise UsageError(f"{str(data)!r} has no anchors/mlenergy/v3_leaderboard/v3_configs_flat.csv; "
                         "allowed: the shared data folder", "--data")
    validation = None
    if args.validate is not None:
        import json

        try:
            validation = json.loads(Path(args.validate).read_text())
            validation["rows"], validation["median_abs_error"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsageError(f"{args.validate!r} is not a validate.json ({e}); allowed: the file `wattserve "
                             "validate` writes", "--validate") from None
    text = markdown_report(data, validation=validation)
    if args.out is not None:
        try:
            Path(args.out).write_text(text)
        except OSError as e:
            raise UsageError(f"cannot write {args.out!r} ({e.strerror})", "--out") from None
    else:
        print(text, end="")
    return 0


def _fit(args: argparse.Namespace) -> int:
    """`calibrate --profile TABLE --out PROFILE`: all checks before any file is written."""
    import math

    from wattserve.perf.iteration_table import read_rows
    from wattserve.perf.perf_profile import load_profile, write_profile
    from wattserve.perf.profile_fit import fit_profile

    if args.out is None:
        raise UsageError("missing; allowed: the perf profile JSON file to write", "--out")
    if not (math.isfinite(args.holdout) and 0 <= args.holdout < 1):
        raise UsageError(f"{args.holdout} is not allowed; allowed: 0 <= SHARE < 1", "--holdout")
    if args.seed < 0:
        raise UsageError(f"{args.seed} is not allowed; allowed: an integer >= 0", "--seed")
    base = load_profile(args.base, "--base")
    table = Path(args.profile)
    if table.is_dir():
        from wattserve.perf.vidur_import import vidur_rows

        for flag in ("model", "gpu"):
            if getattr(args, flag) is None:
                raise UsageError(f"missing; a Vidur folder needs --{flag} (allowed: a catalog name)", f"--{flag}")
        try:
            rows = vidur_rows(table, args.model, args.gpu, args.tp)
        except UsageError as e:
            raise e.named({"profile": "--profile", "tp": "--tp", "model": "--model", "device": "--gpu",
                           "gpu": "--gpu"}) from None
        if not rows:
            raise UsageError(f"{str(table)!r} gives no rows at TP {args.tp}; allowed: a Vidur folder with mlp.csv "
                             "and attention.csv", "--profile")
    else:
        rows = read_rows(table, "--profile")
    name = args.name or Path(args.out).stem
    try:
        res = fit_profile(rows, base, name, f"fitted by `wattserve calibrate --profile {args.profile}` to "
                          f"{len(rows)} rows, {args.holdout:.0%} held out (seed {args.seed})", args.holdout, args.seed)
    except UsageError as e:
        raise e.named({"profile": "--profile"}) from None
    try:
        write_profile(res.profile, args.out)
    except OSError as e:
        raise UsageError(f"cannot write {args.out!r} ({e.strerror})", "--out") from None
    lat = res.profile.latency
    print(f"perf profile {name!r} from {len(rows)} rows of {args.profile}")
    print(res.table())
    print("constants: " + ", ".join(f"{k}={v:.4g}" for k, v in vars(lat).items()))
    print(f"wrote {args.out}")
    return 0
