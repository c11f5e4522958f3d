"""The router's view of the workers' power agents: a GpuPower over N workers that holds no
hardware handle. GPU i is worker i's device (one device per worker, index = worker id, as
RuntimeBackend assumes).

Readings come from each worker's latest stats frame (key "power", see ops.power_stats), so they are
as stale as the stats period (0.25 s). Controls are ops sent to the worker (ops.power_op); range
checks happen here first, synchronously, from the range the worker reported, so an out-of-range cap
is refused with a typed error as the node-level agents refuse it. The worker answers each op with
a {"ev": "power"} event that the router hands to `on_event`; the read-back it carries wins over
older stats frames (both carry the worker's monotonic time `t`), and a failure is kept per GPU
(`last_error`) and queued for the back end's actuation log (`take_failures`), never dropped.

Modelled on Zeus's split between a per-node daemon that owns the GPUs (zeusd) and the clients that
ask it; no reference back to the router: it only knows the two callables it was given.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wattserve.runtime.power.base import (
    ERROR_KINDS,
    GpuInitError,
    GpuLostError,
    GpuPowerError,
    GpuRangeError,
    check_cap,
)


@dataclass(frozen=True)
class PowerOpFailure:
    """An op a worker refused or failed: which GPU, what was asked, the typed error's kind and
    message, and when the router heard of it (its monotonic clock)."""

    gpu: int
    op: str
    value: float | int | None
    kind: str
    message: str
    t: float

    def error(self) -> GpuPowerError:
        """The failure as the typed error the worker raised."""
        return ERROR_KINDS.get(self.kind, GpuPowerError)(self.message)


class WorkerPower:
    def __init__(self, count: int, send: Callable[[int, dict[str, Any]], None],
                 stats: Callable[[int], dict[str, Any]], clock: Callable[[], float] = time.monotonic) -> None:
        self.n = count
        self.send = send
        self.stats = stats
        self.clock = clock
        self._seq = itertools.count(1)
        self._pending_cap: dict[int, tuple[int, float]] = {}
        self._pending_lock: dict[int, tuple[int, int | None]] = {}
        self._acked: dict[int, dict[str, Any]] = {}
        self._last_error: dict[int, PowerOpFailure] = {}
        self._failures: list[PowerOpFailure] = []

    @property
    def modelled(self) -> bool:
        return all(bool(self._stats(i).get("modelled")) for i in range(self.n))

    def _stats(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self.n:
            raise GpuRangeError(f"gpu: {i} does not exist; allowed: 0..{self.n - 1}")
        p = (self.stats(i) or {}).get("power")
        if not p:
            raise GpuInitError(f"GPU {i}: worker {i} has not reported its power readings")
        return p

    def _fresh(self, i: int) -> dict[str, Any]:
        """The stats readings, with the last op's read-back over them when it is newer."""
        p = self._stats(i)
        ev = self._acked.get(i)
        if ev is None or ev.get("t") is None or (p.get("t") is not None and p["t"] >= ev["t"]):
            return p
        newer = {k: ev[k] for k in ("cap_w", "cap_in_force_w") if ev.get(k) is not None}
        return {**p, **newer, "locked_clock_mhz": ev.get("locked_clock_mhz")}

    def count(self) -> int:
        return self.n

    def _num(self, i: int, key: str, p: dict[str, Any] | None = None) -> float:
        """A reading the worker could not take is None in its stats; here it is the typed error."""
        p = self._stats(i) if p is None else p
        v = p.get(key)
        if v is None:
            raise GpuPowerError(f"GPU {i}: worker {i} could not read {key} ({p.get('error') or 'no reading'})")
        return float(v)

    def name(self, i: int) -> str:
        return str(self._stats(i).get("name"))

    def power_w(self, i: int) -> float:
        return self._num(i, "power_w")

    def energy_j(self, i: int) -> float:
        return self._num(i, "energy_j")

    def clock_mhz(self, i: int) -> int:
        return int(self._num(i, "clock_mhz"))

    def throttle_reasons(self, i: int) -> list[str]:
        return list(self._stats(i).get("throttle_reasons") or [])

    def cap_range_w(self, i: int) -> tuple[float, float]:
        p = self._stats(i)
        return self._num(i, "cap_min_w", p), self._num(i, "cap_max_w", p)

    def supported_clocks_mhz(self, i: int) -> list[int]:
        return [int(c) for c in self._stats(i).get("supported_clocks_mhz") or []]

    def power_cap_w(self, i: int) -> float:
        """The cap last asked for while its op is in flight, else the worker's read-back."""
        if i in self._pending_cap:
            return self._pending_cap[i][1]
        return self._num(i, "cap_w", self._fresh(i))

    def cap_in_force_w(self, i: int) -> float:
        p = self._fresh(i)
        return self._num(i, "cap_in_force_w" if p.get("cap_in_force_w") is not None else "cap_w", p)

    def locked_clock_mhz(self, i: int) -> int | None:
        if i in self._pending_lock:
            return self._pending_lock[i][1]
        v = self._fresh(i).get("locked_clock_mhz")
        return None if v is None else int(v)

    def set_power_cap(self, i: int, watts: float) -> float:
        """Refuse out of range now; send the op; return the cap asked for (the read-back follows in
        the worker's event)."""
        check_cap(i, watts, *self.cap_range_w(i))
        seq = next(self._seq)
        self._send(i, {"op": "set_cap", "watts": float(watts), "seq": seq})
        self._pending_cap[i] = (seq, float(watts))
        return float(watts)

    def lock_clock(self, i: int, mhz: int | None) -> None:
        if mhz is not None:
            table = self.supported_clocks_mhz(i)
            if table and not table[0] <= mhz <= table[-1]:
                raise GpuRangeError(f"clock (GPU {i}): {mhz} MHz is outside [{table[0]}, {table[-1]}] MHz")
        seq = next(self._seq)
        self._send(i, {"op": "lock_clock", "mhz": None if mhz is None else int(mhz), "seq": seq})
        self._pending_lock[i] = (seq, None if mhz is None else int(mhz))

    def restore(self) -> None:
        """Ask every worker to put back its default cap and unlock its clocks. A worker that cannot
        be reached any more is recorded as a failure; the others are still asked."""
        for i in range(self.n):
            self._pending_cap.pop(i, None)
            self._pending_lock.pop(i, None)
            try:
                self._send(i, {"op": "restore", "seq": next(self._seq)})
            except GpuLostError as e:
                self._fail(i, "restore", None, e.kind, str(e))

    def _send(self, i: int, header: dict[str, Any]) -> None:
        """Send an op; a worker that cannot be reached is a lost GPU to the caller (a typed
        error, so RuntimeBackend refuses the action instead of failing)."""
        try:
            self.send(i, header)
        except Exception as e:  # noqa: BLE001 - `send` is the router's; any failure to deliver is the same
            raise GpuLostError(f"{header['op']} (GPU {i}): could not reach worker {i}: {e!r}") from None

    def on_event(self, wid: int, ev: dict[str, Any]) -> None:
        """A worker's {"ev": "power"} answer to an op."""
        op = str(ev.get("op"))
        seq = ev.get("seq")
        for pending in (self._pending_cap, self._pending_lock):
            if wid in pending and pending[wid][0] == seq:
                del pending[wid]
        if ev.get("t") is not None:
            prev = self._acked.get(wid)
            if prev is None or prev.get("t") is None or ev["t"] >= prev["t"]:
                self._acked[wid] = ev
        if not ev.get("ok", False):
            self._fail(wid, op, ev.get("value"), str(ev.get("error_kind") or "error"),
                       str(ev.get("error") or f"{op} failed on worker {wid}"))

    def _fail(self, gpu: int, op: str, value: Any, kind: str, message: str) -> None:
        f = PowerOpFailure(gpu, op, value, kind, message, self.clock())
        self._last_error[gpu] = f
        self._failures.append(f)

    def last_error(self, i: int) -> PowerOpFailure | None:
        """The latest failed op on GPU i (kept until another fails; a later success does not clear
        it, so it can be inspected after the fact)."""
        return self._last_error.get(i)

    def take_failures(self) -> list[PowerOpFailure]:
        """Failures since the last call, oldest first (RuntimeBackend logs them)."""
        out, self._failures = self._failures, []
        return out
