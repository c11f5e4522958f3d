"""`wattserve profile`: PALS's offline profile, throughput and power per (cap x batch limit x model x
TP x EP) on the simulator or the runtime, as a tidy table."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from wattserve.errors import UsageError

DESCRIPTION = ("Measure one serving instance under a backlog for every GPU x model x TP x EP x power cap x batch "
               "limit and write one row per point: output tokens/s of the instance, mean power per GPU, J per "
               "output token, TTFT and TPOT percentiles, after a warm-up of the first 20% of --duration. On the "
               "simulator the points run in parallel (--jobs) in seconds; on the runtime they run one after "
               "another on CPU engine workers with the modelled power agent, the cap and batch limit set through "
               "the runtime's control seam. The flags set fields of wattserve.schema.profile.ProfileConfig "
               "(PALS, arXiv 2605.21427: caps x batches at TP 4).")
METAVARS = {"backend": "sim|runtime", "gpu": "GPU[,GPU...]", "model": "MODEL[,MODEL...]", "tp": "N[,N...]",
            "ep": "N[,N...]", "caps": "LO:HI:STEP|W[,W...]", "batches": "N[,N...]", "out": "FILE"}


def add_command(sub: argparse._SubParsersAction, name: str, help: str, description: str,
                metavars: dict[str, str], func: Any) -> None:
    """The subcommand `name`, its flags from the generated table of the same name in
    wattserve.schema.flag_table, so that building the parser imports nothing heavy."""
    from wattserve.schema import flag_table
    from wattserve.schema.flags import add_flags

    p = sub.add_parser(name, help=help, description=description)
    add_flags(p, getattr(flag_table, name.upper()), {"": None}, metavars=metavars)
    p.set_defaults(func=func)


def parse(args: argparse.Namespace, name: str) -> tuple[argparse.Namespace, tuple[Any, ...]]:
    """The parsed flags and the flag table they came from."""
    from wattserve.schema import flag_table

    return args, getattr(flag_table, name.upper())


def validate(args: argparse.Namespace, flags: tuple[Any, ...], model: Any) -> Any:
    """The model built from the flags given, or a UsageError naming the flag."""
    from pydantic import ValidationError

    from wattserve.schema.flags import field_error, overrides
    from wattserve.schema.loading import apply_overrides

    try:
        return model.model_validate(apply_overrides({}, overrides(args, flags)))
    except ValidationError as e:
        raise UsageError(field_error(e, model, {f.path: f"--{f.name}" for f in flags})) from None


def add(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "profile", "profile throughput and power per cap x batch (PALS's offline profile)",
                DESCRIPTION, METAVARS, cmd_profile)


def cmd_profile(args: argparse.Namespace, started: float) -> int:
    from wattserve.experiments.profile import check_out, grid, profile, write_table
    from wattserve.schema.profile import ProfileConfig

    args, flags = parse(args, "profile")
    cfg = validate(args, flags, ProfileConfig)
    names = {f.path: f"--{f.name}" for f in flags}
    total = len(grid(cfg))
    try:
        assert cfg.out is not None
        check_out(cfg.out)

        def progress(n: int) -> None:
            if sys.stderr.isatty():
                print(f"\r{n}/{total} points", end="" if n < total else "\n", file=sys.stderr, flush=True)

        rows = profile(cfg, progress)
    except UsageError as e:
        raise e.named(names) from None
    write_table(rows, cfg.out)
    print(f"wrote {cfg.out}: {len(rows)} points ({cfg.backend}) in {time.perf_counter() - started:.1f} s",
          flush=True)
    return 0

