"""`wattserve agent`: the node power agent (issue 13)."""

from __future__ import annotations

import argparse
import os

from wattserve.cli.profile import add_command, parse, validate
from wattserve.errors import UsageError

DESCRIPTION = ("Own this node's GPUs (NVML, AMD SMI, or modelled GPUs on a machine with none) and serve a small HTTP "
               "API: list GPUs with their cap range and clock table; read power, energy, clocks and throttle "
               "reasons; set a cap; lock and unlock clocks (docs/fleet.md). Listens on 127.0.0.1 unless told "
               "otherwise, and needs --token to listen anywhere else; every setting is read back; the defaults "
               "are restored at exit and on SIGTERM/SIGINT.")


def add(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "agent", "the node power agent: GPU caps and clocks over HTTP (after Zeus's zeusd)",
                DESCRIPTION, {"host": "ADDR", "port": "PORT", "token": "TOKEN", "power": "KIND", "gpus": "N",
                              "gpu": "KIND"}, cmd_agent)


def cmd_agent(args: argparse.Namespace, started: float) -> int:
    import asyncio

    from wattserve.runtime.power.agent_daemon import TOKEN_ENV, check_exposure, open_node_power, run_agent
    from wattserve.schema.agent import AgentConfig

    args, flags = parse(args, "agent")
    if args.token is None and os.environ.get(TOKEN_ENV) is not None:
        args.token = os.environ[TOKEN_ENV]
    cfg = validate(args, flags, AgentConfig)
    names = {f.path: f"--{f.name}" for f in flags}
    try:
        check_exposure(cfg.host, cfg.token)
        power = open_node_power(cfg.power, cfg.gpus, cfg.gpu)
        asyncio.run(run_agent(power, cfg.host, cfg.port, cfg.token, lambda s: print(s, flush=True)))
    except UsageError as e:
        raise e.named(names) from None
    return 0
