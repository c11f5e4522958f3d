"""`wattserve validate`: the calibrated simulator against our real runtime, side by side (issue 12)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wattserve.cli.profile import add_command, parse, validate
from wattserve.errors import UsageError

DESCRIPTION = ("Profile the runtime's engine step on a grid (CPU) and fit a perf profile to it; per layout, run the "
               "real server under profiling loads with step logs on and fit the layout's serving profile to the "
               "logged steps; then replay the same requests (Azure-shaped lengths, Poisson arrivals, seeds apart "
               "from the profiling runs) on the real runtime (a server, its workers, the load generator) and in the "
               "simulator with that profile, per rate, and report throughput, TTFT, TPOT and end-to-end latency side "
               "by side with the error of each. Writes validate.json, validate.md, cdf.png, the profiles and their "
               "tables, and the step logs into --out, all or none. Needs the runtime and fit extras.")


def add(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "validate", "the calibrated simulator against the real runtime, side by side", DESCRIPTION,
                {"model": "NAME", "layouts": "A,B", "rates": "R1,R2,R3", "profile-loads": "F1,F2", "requests": "N", "repeats": "N",
                 "holdout": "SHARE", "profile-table": "FILE", "data": "DIR", "seed": "N", "out": "DIR"},
                cmd_validate)


def cmd_validate(args: argparse.Namespace, started: float) -> int:
    import importlib.util
    import time

    from wattserve.cli.parser import DEFAULT_DATA
    from wattserve.metrics.outputs import check_out_dir, staged_dir
    from wattserve.schema.validate import ValidateConfig

    args, flags = parse(args, "validate")
    cfg = validate(args, flags, ValidateConfig)
    names = {f.path: f"--{f.name}" for f in flags}
    check_out_dir(cfg.out, "--out")
    for module, extra in (("torch", "runtime"), ("scipy", "fit")):
        if importlib.util.find_spec(module) is None:
            raise UsageError(f"{module} is not installed; allowed: install it with pip install 'wattserve[{extra}]'")
    if cfg.profile_table is not None and not Path(cfg.profile_table).is_file():
        raise UsageError(f"{cfg.profile_table!r} is not a file; allowed: an iteration table CSV", "--profile-table")
    if cfg.data is None and Path(DEFAULT_DATA).is_dir():
        cfg = cfg.model_copy(update={"data": str(DEFAULT_DATA)})
    from wattserve.experiments.validate import run_validate

    def progress(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {line}", file=sys.stderr, flush=True)

    try:
        with staged_dir(Path(cfg.out)) as stage:
            doc = run_validate(cfg, stage, progress)
    except UsageError as e:
        raise e.named(names) from None
    print((Path(cfg.out) / "validate.md").read_text())
    print(f"median absolute error {doc['median_abs_error']:.1%}; results in {cfg.out}/ "
          f"({time.perf_counter() - started:.0f} s)")
    return 0
