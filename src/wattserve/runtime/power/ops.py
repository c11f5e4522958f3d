"""Worker-side power ops: what a worker does with a power command from the router, and the power
readings it sends with its stats.

Each worker owns the agent of its own device (local.py), as Zeus's per-node daemon owns its GPUs
(zeus.device, zeusd), so the router holds no hardware handle. Ops:

  {"op": "set_cap", "watts": W, "seq": n}        set the power cap, read it back
  {"op": "lock_clock", "mhz": M | None, "seq": n} lock the SM clock (None: unlock)
  {"op": "restore", "seq": n}                     default cap, clocks unlocked

Each answers one event (`power_op`'s return), and never raises for a device failure: the typed
error becomes ok False with its message and kind, so a refused op reaches the router's log instead
of killing the worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from wattserve.runtime.power.base import GpuPower, GpuPowerError
from wattserve.runtime.power.clock_actuator import ClockActuator

POWER_OPS = ("set_cap", "lock_clock", "restore")


def _read(fn: Callable[[], Any], errors: list[str]) -> Any:
    try:
        return fn()
    except GpuPowerError as e:
        errors.append(str(e))
        return None


def _locked(agent: GpuPower, gpu: int, clocks: ClockActuator | None) -> int | None:
    if clocks is not None:
        return clocks.ceiling
    read = getattr(agent, "locked_clock_mhz", None)
    return read(gpu) if read is not None else None


def power_op(agent: GpuPower, header: dict[str, Any], clocks: ClockActuator | None = None, gpu: int = 0,
             clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Run one power op on this worker's device and return the event to send back:
    {"ev": "power", "op", "seq", "value", "ok", "cap_w", "cap_in_force_w", "locked_clock_mhz",
    "error", "error_kind", "t"}. `cap_w` is the cap read back after the op, `t` this process's
    monotonic time when it was read (the router orders it against stats frames by `t`). With a
    ClockActuator, a clock lock is its ceiling, combined with the step governor's request."""
    op = header.get("op")
    value = header.get("watts") if op == "set_cap" else header.get("mhz")
    error: GpuPowerError | None = None
    try:
        if op == "set_cap":
            agent.set_power_cap(gpu, float(header["watts"]))
        elif op == "lock_clock":
            mhz = header.get("mhz")
            mhz = None if mhz is None else int(mhz)
            if clocks is not None:
                clocks.set_ceiling(mhz)
            else:
                agent.lock_clock(gpu, mhz)
        elif op == "restore":
            if clocks is not None:
                clocks.restore_device()
            else:
                agent.restore()
        else:
            error = GpuPowerError(f"power op: unknown op {op!r}; allowed: {', '.join(POWER_OPS)}")
    except GpuPowerError as e:
        error = e
    except (KeyError, TypeError, ValueError) as e:
        error = GpuPowerError(f"power op {op!r}: malformed value ({e!r})")
    reads: list[str] = []
    cap = _read(lambda: agent.power_cap_w(gpu), reads)
    in_force = _read(lambda: getattr(agent, "cap_in_force_w", agent.power_cap_w)(gpu), reads)
    locked = _read(lambda: _locked(agent, gpu, clocks), reads)
    return {"ev": "power", "op": op, "seq": header.get("seq"), "value": value, "ok": error is None,
            "cap_w": cap, "cap_in_force_w": in_force, "locked_clock_mhz": locked,
            "error": None if error is None else str(error), "error_kind": None if error is None else error.kind,
            "t": clock()}


def power_stats(agent: GpuPower, clocks: ClockActuator | None = None, gpu: int = 0,
                clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """This worker's power readings, JSON-able, for its stats frame (key "power"): name, power_w,
    energy_j, cap_w, cap_in_force_w, cap_min_w, cap_max_w, clock_mhz, locked_clock_mhz (the control
    plane's lock), device_locked_clock_mhz (what the device holds, the governor's request
    included), supported_clocks_mhz, throttle_reasons, modelled, t (monotonic time before the first read,
    so a frame is never taken as newer than an op that finished while it was read),
    error (the first failed reading, else None). A reading that fails is None rather than an
    exception: a lost GPU must not silence the worker's stats. Cost: about a dozen
    agent reads, 64 us median against the fake NVML (bench/clock_latency.py) and 68 us for the
    modelled agent, about 1 KB of JSON (the clock table is most of it; agents read it once).
    Against a real GPU it is that many NVML reads; `bench/clock_latency.py --backend nvml` times it.
    """
    t = clock()
    errors: list[str] = []
    rng = _read(lambda: agent.cap_range_w(gpu), errors)
    clocks_read = getattr(agent, "supported_clocks_mhz", None)
    device_lock = getattr(agent, "locked_clock_mhz", None)
    supported = _read(lambda: clocks_read(gpu), errors) if clocks_read is not None else None
    return {
        "name": _read(lambda: agent.name(gpu), errors),
        "power_w": _read(lambda: float(agent.power_w(gpu)), errors),
        "energy_j": _read(lambda: float(agent.energy_j(gpu)), errors),
        "cap_w": _read(lambda: float(agent.power_cap_w(gpu)), errors),
        "cap_in_force_w": _read(lambda: float(getattr(agent, "cap_in_force_w", agent.power_cap_w)(gpu)), errors),
        "cap_min_w": None if rng is None else float(rng[0]),
        "cap_max_w": None if rng is None else float(rng[1]),
        "clock_mhz": _read(lambda: int(agent.clock_mhz(gpu)), errors),
        "locked_clock_mhz": _read(lambda: _locked(agent, gpu, clocks), errors),
        "device_locked_clock_mhz": _read(lambda: device_lock(gpu), errors) if device_lock is not None else None,
        "supported_clocks_mhz": [int(c) for c in supported] if supported else [],
        "throttle_reasons": _read(lambda: list(agent.throttle_reasons(gpu)), errors) or [],
        "modelled": bool(agent.modelled),
        "t": t,
        "error": errors[0] if errors else None,
    }
