"""`wattserve profile`: PALS's offline profile, throughput and power per (cap x batch limit x model x
TP x EP) on the simulator or the runtime, as a tidy table; with `--kind iterations`, our engine's
iteration latency per batch shape (wattserve.experiments.iteration_profile)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wattserve.errors import UsageError

if TYPE_CHECKING:
    from wattserve.schema.profile import ProfileConfig

DESCRIPTION = ("Measure one serving instance under a backlog for every GPU x model x TP x EP x power cap x batch "
               "limit and write one row per point: output tokens/s of the instance, mean power per GPU, J per "
               "output token, TTFT and TPOT percentiles, after a warm-up of the first 20% of --duration. On the "
               "simulator the points run in parallel (--jobs) in seconds; on the runtime they run one after "
               "another on CPU engine workers with the modelled power agent, the cap and batch limit set through "
               "the runtime's control seam (PALS, arXiv 2605.21427: caps x batches at TP 4). With --kind "
               "iterations (--backend runtime) it times one step of our own engine instead, for every model x "
               "batch shape (prefill, decode and mixed rows from the --prefill-*, --decode-* and --mixed-* "
               "grids), the median of --repeats steps after --warmup, and writes the iteration table that "
               "`wattserve calibrate --profile` fits. The flags set fields of "
               "wattserve.schema.profile.ProfileConfig.")
METAVARS = {"kind": "operating-points|iterations", "backend": "sim|runtime", "gpu": "GPU[,GPU...]",
            "model": "MODEL[,MODEL...]", "tp": "N[,N...]", "ep": "N[,N...]", "caps": "LO:HI:STEP|W[,W...]",
            "batches": "N[,N...]", "device": "cpu|cuda", "prefill-tokens": "N[,N...]", "prefill-seqs": "N[,N...]",
            "prefill-ctx": "N[,N...]", "decode-seqs": "N[,N...]", "decode-ctx": "N[,N...]",
            "mixed-tokens": "N[,N...]", "mixed-seqs": "N[,N...]", "mixed-ctx": "N[,N...]", "out": "FILE"}


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
    add_command(sub, "profile", "profile throughput and power per cap x batch (PALS's offline profile), or "
                "our engine's iteration latency per batch shape (--kind iterations)", DESCRIPTION, METAVARS,
                cmd_profile)


def _progress(total: int, what: str) -> Callable[[int], None]:
    """`n/total what` on stderr, where it is a terminal."""

    def progress(n: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{n}/{total} {what}", end="" if n < total else "\n", file=sys.stderr, flush=True)

    return progress


def cmd_profile(args: argparse.Namespace, started: float) -> int:
    from wattserve.schema.profile import ProfileConfig

    args, flags = parse(args, "profile")
    cfg = validate(args, flags, ProfileConfig)
    names = {f.path: f"--{f.name}" for f in flags}
    assert cfg.out is not None
    if cfg.kind == "iterations":
        return _iterations(cfg, names, started)
    from wattserve.experiments.profile import check_out, grid, profile, write_table

    try:
        check_out(cfg.out)
        rows = profile(cfg, _progress(len(grid(cfg)), "points"))
    except UsageError as e:
        raise e.named(names) from None
    write_table(rows, cfg.out)
    print(f"wrote {cfg.out}: {len(rows)} points ({cfg.backend}) in {time.perf_counter() - started:.1f} s",
          flush=True)
    return 0


def _iterations(cfg: ProfileConfig, names: dict[str, str], started: float) -> int:
    """`--kind iterations`: wattserve.experiments.iteration_profile, imported here so that the
    parser stays free of torch."""
    from wattserve.experiments import iteration_profile as ip
    from wattserve.experiments.profile import check_out

    assert cfg.out is not None
    try:
        check_out(cfg.out)
        rows = ip.profile_iterations(cfg, _progress(ip.steps(cfg), "steps"))
    except UsageError as e:
        raise e.named(names) from None
    ip.write(rows, cfg.out)
    print(f"wrote {cfg.out}: {len(rows)} shapes ({ip.ENGINE} on {rows[0].device}, {cfg.threads} thread(s)) in "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    return 0

