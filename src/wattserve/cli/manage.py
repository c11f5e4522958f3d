"""`wattserve manage`: an existing vLLM or SGLang fleet under a power budget (issue 13)."""

from __future__ import annotations

import argparse
import os
import sys

from wattserve.errors import UsageError

DESCRIPTION = ("Hold an existing vLLM or SGLang fleet under a power budget with one of wattserve's policies: read "
               "each engine's Prometheus /metrics and each node agent's GPUs (`wattserve agent`), and move caps and "
               "clocks through the agents. Policies that need what the engine cannot show or change at run time "
               "are refused (docs/fleet.md). With --out, writes actuations.csv, caps.csv and summary.json at exit.")


def add(sub: argparse._SubParsersAction) -> None:
    from wattserve.schema.flag_table import MANAGE
    from wattserve.schema.flags import add_flags

    p = sub.add_parser("manage", help="hold an existing vLLM/SGLang fleet under a power budget", description=DESCRIPTION)
    add_flags(p, MANAGE, {"": None, "control": "power control", "slo": "SLO"},
              metavars={"engine": "NAME", "endpoints": "URL[,URL...]", "agents": "URL[,URL...]", "roles": "R[,R...]",
                        "token": "TOKEN", "poll": "S", "duration": "S", "out": "DIR", "budget-trace": "FILE|SHAPE",
                        "target": "TOK_S|FILE"})
    p.set_defaults(func=cmd_manage)


def cmd_manage(args: argparse.Namespace, started: float) -> int:
    import asyncio
    from pathlib import Path

    from pydantic import ValidationError

    from wattserve.metrics import outputs
    from wattserve.runtime.power.agent_daemon import TOKEN_ENV
    from wattserve.schema.agent import ManageConfig
    from wattserve.schema.flag_table import MANAGE
    from wattserve.schema.flags import field_error, overrides
    from wattserve.schema.loading import apply_overrides

    given = overrides(args, MANAGE)
    flags = {f.path: f"--{f.name}" for f in MANAGE}
    if "token" not in given and os.environ.get(TOKEN_ENV) is not None:
        given["token"] = os.environ[TOKEN_ENV]
    try:
        cfg = ManageConfig.model_validate(apply_overrides({}, given))
    except ValidationError as e:
        raise UsageError(field_error(e, ManageConfig, flags)) from None
    if cfg.out is not None:
        outputs.check_out_dir(cfg.out, "--out")
    try:
        from wattserve.runtime.fleet.engines import ENGINES
        from wattserve.runtime.fleet.manage import ManageRun, check_policy, manage
    except ImportError as e:
        raise UsageError(f"manage needs aiohttp and prometheus_client ({e.name} is missing); "
                         "pip install 'wattserve[runtime]'") from None

    def note(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    run = ManageRun()
    try:
        check_policy(str(cfg.control.policy), ENGINES[cfg.engine])
        asyncio.run(manage(cfg, note, run))
    except UsageError as e:
        raise e.named(flags) from None
    s = run.summary
    if cfg.out is not None:
        with outputs.staged_dir(Path(cfg.out)) as stage:
            outputs.write_actuations_csv(stage / "actuations.csv", run.log)
            with (stage / "caps.csv").open("w") as f:
                f.write("time_s,budget_w,committed_w,readback_w,alive_endpoints,alive_agents\n")
                for c in run.samples:
                    f.write(f"{c.time_s:.3f},{c.budget_w:.3f},{c.committed_w:.3f},{c.readback_w:.3f},"
                            f"{c.alive_endpoints},{c.alive_agents}\n")
            outputs.write_json(stage / "summary.json", s)
    mx = s.get("max_sum_caps_w")
    print(f"{s['policy']} on {s['engine']}: {s['cap_actuations']['applied']} caps applied, max sum of caps "
          f"{'n/a' if mx is None else f'{mx:.1f}'} W under a {s['budget_w']:g} W budget "
          f"({'held' if s['budget_held'] else 'NOT held'}), {sum(e['alive'] for e in s['endpoints'])}/"
          f"{len(s['endpoints'])} endpoints up" + (f"; results in {cfg.out}/" if cfg.out else ""))
    return 0
