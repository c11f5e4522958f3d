"""Clock changes off the engine's step loop.

A per-iteration governor (BiScale-style DVFS: a lower SM clock for decode iterations with TPOT
slack) may ask for a new clock before every step. Setting it is a driver call that the step must
not wait for: `ClockActuator.request(mhz)` only records the wish and wakes one background thread,
which applies the latest wish (older ones are dropped, coalesced), skips a call when the device is
already locked there, and times every call.

What the call costs. NVML's reference gives no latency for nvmlDeviceSetGpuLockedClocks: it says
the call changes device state, needs root (NVML_ERROR_NO_PERMISSION otherwise), works on Volta and
newer, and holds until nvmlDeviceResetGpuLockedClocks or a driver reload (NVML API Reference,
"Device Commands": https://docs.nvidia.com/deploy/nvml-api/group__nvmlDeviceCommands.html; the same
text in cuda-python's binding: https://nvidia.github.io/cuda-python/cuda-bindings/latest/module/generated/cuda.bindings.nvml.device_set_gpu_locked_clocks.html).
It is a synchronous driver call, and calling it often has side effects: NVIDIA/nccl#1551 reports
that calling it about every 50 ms delayed NCCL collectives, which a fixed clock did not. So the
real figure is measured, not assumed: `bench/clock_latency.py --backend nvml` times it on the GPU
at hand (as root), and `latencies_s` records every live call. Against the fake NVML
(tests/fake_nvml.py) `bench/clock_latency.py` measured wattserve's own overhead: lock_clock p50
4.9 us, request() p50 2.9 us, power_stats p50 64 us (2000 calls each, a shared 2-core CPU).

Two sources bound the clock: the control plane's lock (`set_ceiling`, synchronous so that its
failure is reported to the op that asked) and the governor's request; the device gets the lower,
as `effective_lock` defines and the simulator's StepClock applies.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from wattserve.runtime.power.base import GpuPower, GpuPowerError, effective_lock

UNSET = object()


class ClockActuator:
    def __init__(self, agent: GpuPower, gpu: int = 0, on_error: Callable[[GpuPowerError], None] | None = None,
                 timer: Callable[[], float] = time.perf_counter, history: int = 1024) -> None:
        self.agent = agent
        self.gpu = gpu
        self.on_error = on_error
        self.timer = timer
        self.ceiling: int | None = None
        """The control plane's lock (None: none)."""
        self.requested: int | None = None
        """The governor's latest request (None: as high as the ceiling allows)."""
        self.applied: int | None = None
        """The lock the device holds, as far as this actuator set it."""
        self.latencies_s: deque[float] = deque(maxlen=history)
        self.calls = 0
        self.skipped = 0
        self.coalesced = 0
        self.errors = 0
        self.last_error: str | None = None
        self._want: int | None = None
        self._failed: Any = UNSET
        self._pending = False
        self._busy = False
        self._closed = False
        self._cv = threading.Condition()
        self._device = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"wattserve-clock-{gpu}", daemon=True)
        self._thread.start()

    def request(self, mhz: int | None) -> None:
        """The governor's clock for the coming steps; returns at once."""
        with self._cv:
            self.requested = None if mhz is None else int(mhz)
            want = effective_lock(self.ceiling, self.requested)
            if want == self._want and not self._pending:
                return
            if self._pending:
                self.coalesced += 1
            self._want = want
            self._pending = True
            self._cv.notify()

    def set_ceiling(self, mhz: int | None) -> None:
        """The control plane's lock, applied now in the caller's thread (raises the typed error);
        the ceiling changes only if the device took it."""
        with self._device:
            want = effective_lock(None if mhz is None else int(mhz), self.requested)
            if want != self.applied:
                self._call(want)
            with self._cv:
                self.ceiling = None if mhz is None else int(mhz)
                self._want = effective_lock(self.ceiling, self.requested)
                self._failed = UNSET
                self._pending = self._want != self.applied
                self._cv.notify()

    def restore_device(self) -> None:
        """The agent's restore() (default cap, clocks unlocked), with no call of this actuator in
        flight, and the ceiling and request forgotten; the governor's next request applies anew."""
        with self._device:
            self.agent.restore()
            with self._cv:
                self.ceiling = self.requested = self._want = self.applied = None
                self._failed = UNSET
                self._pending = False

    def _call(self, mhz: int | None) -> None:
        t0 = self.timer()
        try:
            self.agent.lock_clock(self.gpu, mhz)
        finally:
            self.latencies_s.append(self.timer() - t0)
            self.calls += 1
        self.applied = mhz

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return
                want = self._want
                self._pending = False
                self._busy = True
            with self._device:
                if want == self.applied or want == self._failed:
                    self.skipped += 1
                else:
                    try:
                        self._call(want)
                        self._failed = UNSET
                    except GpuPowerError as e:
                        self.errors += 1
                        self.last_error = str(e)
                        self._failed = want
                        if self.on_error is not None:
                            self.on_error(e)
            with self._cv:
                self._busy = False
                self._cv.notify_all()

    def idle(self, timeout_s: float | None = None) -> bool:
        """Wait until no request is pending or in flight; True if so within the timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._pending and not self._busy, timeout_s)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join()

    def stats(self) -> dict[str, Any]:
        """JSON-able counters for the worker's stats frame."""
        lat = sorted(self.latencies_s)
        return {"ceiling_mhz": self.ceiling, "requested_mhz": self.requested, "applied_mhz": self.applied,
                "calls": self.calls, "skipped": self.skipped, "coalesced": self.coalesced, "errors": self.errors,
                "last_error": self.last_error,
                "latency_p50_s": lat[len(lat) // 2] if lat else None, "latency_max_s": lat[-1] if lat else None}
