"""The GPU power agents: NVML (against a fake that behaves like NVML) and the modelled one."""

from __future__ import annotations

import signal

import pytest
from fake_nvml import FakeNvml

from wattserve.runtime.power.base import GpuPowerError
from wattserve.runtime.power.modelled import ModelledGpuPower
from wattserve.runtime.power.nvml import NvmlGpuPower
from wattserve.runtime.power.select import select_power


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def agent(**kw) -> tuple[NvmlGpuPower, FakeNvml, Clock]:
    clock = Clock()
    fake = FakeNvml(clock=clock, **kw)
    return NvmlGpuPower(nvml=fake, install_handlers=False), fake, clock


def test_set_cap_reads_back_and_power_settles() -> None:
    a, fake, clock = agent(settle_s=0.2)
    assert a.cap_range_w(0) == (200.0, 700.0)
    assert a.set_power_cap(0, 400) == 400.0
    assert a.power_cap_w(0) == 400.0
    assert a.power_w(0) == 650.0
    assert "sw_power_cap" in a.throttle_reasons(0)
    clock.t = 0.25
    assert a.power_w(0) == 400.0
    assert a.clock_mhz(0) < 1980
    assert a.power_cap_w(1) == 700.0


def test_out_of_range_caps_are_refused_before_nvml() -> None:
    a, fake, _ = agent()
    for w in (150, 701):
        with pytest.raises(GpuPowerError, match=r"outside the allowed range \[200, 700\] W"):
            a.set_power_cap(0, w)
    assert fake.calls == []


def test_permission_and_driver_errors_are_clear() -> None:
    a, _, _ = agent(root=False)
    with pytest.raises(GpuPowerError, match="no permission"):
        a.set_power_cap(0, 500)
    with pytest.raises(GpuPowerError, match="no permission"):
        a.lock_clock(0, 1500)
    with pytest.raises(GpuPowerError, match="NVML could not start"):
        NvmlGpuPower(nvml=FakeNvml(driver=False), install_handlers=False)
    with pytest.raises(GpuPowerError, match="NVML sees 2"):
        NvmlGpuPower(indices=[0, 5], nvml=FakeNvml(), install_handlers=False)


def test_read_back_mismatch_is_an_error() -> None:
    a, _, _ = agent(ignore_sets=True)
    with pytest.raises(GpuPowerError, match="the device reports 700 W"):
        a.set_power_cap(0, 300)


def test_energy_counter_and_restore() -> None:
    a, fake, clock = agent(settle_s=0.0)
    assert a.energy_j(0) == 0.0
    clock.t = 2.0
    assert a.energy_j(0) == pytest.approx(1300.0)
    a.set_power_cap(1, 300)
    a.lock_clock(1, 1410)
    assert a.clock_mhz(1) == 1410
    a.restore()
    assert fake.devices[1].limit_mw == 700_000 and fake.devices[1].locked is None


def test_restores_defaults_on_sigterm() -> None:
    fake = FakeNvml()
    prev = signal.getsignal(signal.SIGTERM)
    try:
        a = NvmlGpuPower(nvml=fake, install_handlers=True)
        a.set_power_cap(0, 350)
        with pytest.raises(SystemExit):
            signal.raise_signal(signal.SIGTERM)
        assert fake.devices[0].limit_mw == 700_000
    finally:
        signal.signal(signal.SIGTERM, prev)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_select_power_never_falls_back_silently() -> None:
    made = []

    def factory() -> str:
        made.append(1)
        return "modelled-agent"

    agent_, note = select_power("auto", 1, factory)
    assert agent_ == "modelled-agent" and "falling back to modelled" in note
    with pytest.raises(GpuPowerError):
        select_power("nvml", 1, factory)
    with pytest.raises(GpuPowerError, match="allowed: amdsmi, auto, modelled, nvml"):
        select_power("magic", 1, factory)


def test_modelled_agent_follows_the_power_model() -> None:
    clock = Clock()
    stats = {"busy_s": 0.0, "steps": 0, "tokens": 0, "role": "prefill"}
    m = ModelledGpuPower(1, "h100", "llama-3.1-8b", lambda i: stats, settle_s=0.3, clock=clock)
    assert m.modelled and m.power_w(0) == 75.0
    clock.t = 1.0
    stats.update(busy_s=0.5, steps=10, tokens=20480)
    busy_half = m.power_w(0)
    assert 75 < busy_half < 700
    with pytest.raises(GpuPowerError, match=r"\[200, 700\] W"):
        m.set_power_cap(0, 100)
    m.set_power_cap(0, 300)
    assert m.power_cap_w(0) == 300 and m.cap_in_force_w(0) == 700
    clock.t = 1.4
    stats.update(busy_s=0.9, steps=20, tokens=40960)
    assert m.cap_in_force_w(0) == 300
    clock.t = 2.4
    stats.update(busy_s=1.9, steps=30, tokens=61440)
    assert m.power_w(0) <= 300 + 1e-9
    assert "sw_power_cap" in m.throttle_reasons(0)
    assert m.energy_j(0) > 0


def test_a_second_modelled_reading_right_after_the_first_reports_the_same_draw() -> None:
    """Reading power (or energy, then power) must not re-estimate over microseconds and call a busy
    GPU idle; the runtime back end reads energy and power back to back."""
    clock = Clock()
    stats = {"busy_s": 0.0, "steps": 0, "tokens": 0, "role": "prefill"}
    m = ModelledGpuPower(1, "h100", "llama-3.1-8b", lambda i: stats, clock=clock)
    clock.t = 1.0
    stats.update(busy_s=0.8, steps=10, tokens=20480)
    e = m.energy_j(0)
    first = m.power_w(0)
    clock.t = 1.0 + 1e-6
    assert first > 75 and m.power_w(0) == first and m.energy_j(0) == e
