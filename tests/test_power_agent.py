"""The GPU power agents: NVML (against a fake that behaves like NVML) and the modelled one."""

from __future__ import annotations

import signal

import pytest
from fake_nvml import FakeNvml

from wattserve.runtime.power.base import (
    GpuInitError,
    GpuLostError,
    GpuNotFoundError,
    GpuNotSupportedError,
    GpuPermissionError,
    GpuPowerError,
    GpuRangeError,
)
from wattserve.runtime.power.modelled import ModelledGpuPower
from wattserve.runtime.power.nvml import NvmlGpuPower

from manual_clock import Clock


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
        with pytest.raises(GpuRangeError, match=r"outside the allowed range \[200, 700\] W"):
            a.set_power_cap(0, w)
    assert fake.calls == []


def test_permission_and_driver_errors_are_clear() -> None:
    a, _, _ = agent(root=False)
    with pytest.raises(GpuPermissionError, match="no permission"):
        a.set_power_cap(0, 500)
    with pytest.raises(GpuPermissionError, match="no permission"):
        a.lock_clock(0, 1500)
    with pytest.raises(GpuInitError, match="NVML could not start"):
        NvmlGpuPower(nvml=FakeNvml(driver=False), install_handlers=False)
    with pytest.raises(GpuNotFoundError, match="NVML sees 2"):
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


def test_nvml_error_codes_become_typed_errors() -> None:
    """Each NVML return code that a caller can act on arrives as its own GpuPowerError subclass
    (as zeus.device.exception types them), so "run as root" is told from "this GPU cannot"."""
    a, fake, _ = agent()
    fake.devices[0].lockable = False
    with pytest.raises(GpuNotSupportedError, match="not supported"):
        a.lock_clock(0, 1500)
    with pytest.raises(GpuRangeError, match="invalid argument"):
        a.lock_clock(1, 5000)
    assert a.locked_clock_mhz(1) is None
    fake.devices[1].lost = True
    with pytest.raises(GpuLostError, match="lost"):
        a.power_w(1)
    assert a.power_w(0) == 650.0


def test_supported_clocks_are_the_graphics_clocks_at_the_highest_memory_clock() -> None:
    a, fake, _ = agent()
    clocks = a.supported_clocks_mhz(0)
    assert clocks[0] == 345 and clocks[-1] == 1980 and clocks == sorted(clocks) and len(clocks) == 110
    fake.devices[0].lost = True
    assert a.supported_clocks_mhz(0) == clocks


def test_lock_clock_records_the_lock_and_unlock_forgets_it() -> None:
    a, fake, _ = agent()
    a.lock_clock(0, 1410)
    assert a.locked_clock_mhz(0) == 1410 and fake.devices[0].locked == (1410, 1410)
    a.lock_clock(0, None)
    assert a.locked_clock_mhz(0) is None and fake.devices[0].locked is None


def test_devices_open_by_uuid_prefix_and_mig_instance_on_the_parent_gpu() -> None:
    fake = FakeNvml(count=3, migs=2)
    by_uuid = NvmlGpuPower(indices=[fake.devices[2].uuid], nvml=fake, install_handlers=False)
    assert by_uuid.handles == [fake.devices[2]]
    by_prefix = NvmlGpuPower(indices=[fake.devices[1].uuid[:16]], nvml=fake, install_handlers=False)
    assert by_prefix.handles == [fake.devices[1]]
    mig = NvmlGpuPower(indices=[fake.devices[1].migs[1].uuid], nvml=fake, install_handlers=False)
    assert mig.handles == [fake.devices[1]]
    mig.set_power_cap(0, 400)
    assert fake.devices[1].limit_mw == 400_000
    with pytest.raises(GpuNotFoundError, match="no GPU with that UUID"):
        NvmlGpuPower(indices=["GPU-ffffffff"], nvml=fake, install_handlers=False)
    with pytest.raises(GpuNotFoundError, match="unique"):
        NvmlGpuPower(indices=["GPU-0000000"], nvml=fake, install_handlers=False)


def test_modelled_agent_offers_the_catalog_clock_table_and_its_lock() -> None:
    m = ModelledGpuPower(1, "a100", "llama-3.1-8b", lambda i: {}, clock=Clock())
    assert m.supported_clocks_mhz(0) == list(range(210, 1411, 15))
    m.lock_clock(0, 1005)
    assert m.locked_clock_mhz(0) == 1005
    with pytest.raises(GpuRangeError, match="outside"):
        m.lock_clock(0, 1500)


def test_every_typed_error_is_a_usage_error_with_a_stable_kind() -> None:
    from wattserve.errors import UsageError
    from wattserve.runtime.power.base import ERROR_KINDS

    assert len(set(ERROR_KINDS)) == 7
    for kind, cls in ERROR_KINDS.items():
        assert issubclass(cls, GpuPowerError) and issubclass(cls, UsageError) and cls.kind == kind
