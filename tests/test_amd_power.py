"""The AMD SMI power agent, against a fake that behaves like ROCm's amdsmi package."""

from __future__ import annotations

import pytest
from fake_amdsmi import AMDSMI_STATUS_NO_PERM, FakeAmdSmi

from wattserve.runtime.power.amdsmi import AmdSmiGpuPower, amdsmi_error
from wattserve.runtime.power.base import (
    GpuInitError,
    GpuNotFoundError,
    GpuNotSupportedError,
    GpuPermissionError,
    GpuRangeError,
)
from wattserve.runtime.power.local import open_device_power

from manual_clock import Clock


def agent(**kw) -> tuple[AmdSmiGpuPower, FakeAmdSmi, Clock]:
    clock = Clock()
    fake = FakeAmdSmi(clock=clock, **kw)
    return AmdSmiGpuPower(amdsmi=fake, install_handlers=False), fake, clock


def test_caps_are_set_in_microwatts_read_back_and_power_settles() -> None:
    a, fake, clock = agent(settle_s=0.2)
    assert a.cap_range_w(0) == (300.0, 750.0)
    assert a.set_power_cap(0, 450.5) == 450.5
    assert fake.calls == ["set_cap 0 450500000"]
    assert a.power_cap_w(0) == 450.5
    assert a.power_w(0) == 700.0
    clock.t = 0.25
    assert a.power_w(0) == 450.0
    assert a.power_cap_w(1) == 750.0


def test_out_of_range_caps_are_refused_before_amdsmi() -> None:
    a, fake, _ = agent()
    for w in (299, 751):
        with pytest.raises(GpuRangeError, match=r"outside the allowed range \[300, 750\] W"):
            a.set_power_cap(0, w)
    assert fake.calls == []


def test_permission_errors_are_typed_from_the_status_code() -> None:
    a, fake, _ = agent(root=False)
    with pytest.raises(GpuPermissionError, match="no permission"):
        a.set_power_cap(0, 500)
    with pytest.raises(GpuPermissionError, match="no permission"):
        a.lock_clock(0, 1300)
    assert fake.calls == ["set_cap 0 500000000", "determinism 0 1300"]


def test_status_codes_map_to_typed_errors() -> None:
    fake = FakeAmdSmi()
    exc = fake.AmdSmiLibraryException
    assert isinstance(amdsmi_error(fake, "x", exc(AMDSMI_STATUS_NO_PERM)), GpuPermissionError)
    assert isinstance(amdsmi_error(fake, "x", exc(1)), GpuRangeError)
    assert isinstance(amdsmi_error(fake, "x", exc(17)), GpuRangeError)
    assert isinstance(amdsmi_error(fake, "x", exc(2)), GpuNotSupportedError)
    assert isinstance(amdsmi_error(fake, "x", exc(31)), GpuNotFoundError)
    assert isinstance(amdsmi_error(fake, "x", exc(34)), GpuInitError)


def test_no_driver_and_missing_gpus_are_clear() -> None:
    with pytest.raises(GpuInitError, match="AMD SMI could not start"):
        AmdSmiGpuPower(amdsmi=FakeAmdSmi(driver=False), install_handlers=False)
    with pytest.raises(GpuNotFoundError, match="AMD SMI sees 2"):
        AmdSmiGpuPower(indices=[2], amdsmi=FakeAmdSmi(), install_handlers=False)
    with pytest.raises(GpuNotFoundError, match="no GPU with that UUID"):
        AmdSmiGpuPower(indices=["nope"], amdsmi=FakeAmdSmi(), install_handlers=False)


def test_energy_counter_is_the_accumulator_times_its_resolution() -> None:
    a, _, clock = agent(settle_s=0.0)
    assert a.energy_j(0) == 0.0
    clock.t = 2.0
    assert a.energy_j(0) == pytest.approx(1400.0, abs=0.01)


def test_clock_table_is_the_dpm_levels_and_a_lock_is_a_determinism_ceiling() -> None:
    a, fake, _ = agent()
    assert a.supported_clocks_mhz(0) == [500, 1300, 2100]
    a.lock_clock(0, 1200)
    assert a.clock_mhz(0) == 1200 and a.locked_clock_mhz(0) == 1200
    with pytest.raises(GpuRangeError, match=r"outside \[500, 2100\] MHz"):
        a.lock_clock(0, 2500)
    a.lock_clock(0, None)
    assert a.locked_clock_mhz(0) is None and fake.gpus[0].determinism_mhz is None
    assert fake.calls == ["determinism 0 1200", "perf_level 0 0"]


def test_clock_table_keeps_the_top_level_when_the_level_list_is_cut() -> None:
    a, _, _ = agent(cut_levels=True)
    assert a.supported_clocks_mhz(0) == [500, 1300, 2100]


def test_determinism_unsupported_is_typed() -> None:
    a, _, _ = agent(determinism=False)
    with pytest.raises(GpuNotSupportedError, match="not supported"):
        a.lock_clock(0, 1300)


def test_restore_puts_back_the_default_cap_and_auto_clocks() -> None:
    a, fake, _ = agent()
    a.set_power_cap(1, 400)
    a.lock_clock(1, 1300)
    a.restore()
    assert fake.gpus[1].cap_uw == 750_000_000 and fake.gpus[1].determinism_mhz is None
    assert fake.gpus[0].cap_uw == 750_000_000


def test_name_and_power_read_the_fields_the_part_has() -> None:
    a, _, _ = agent()
    assert a.name(0) == "AMD Instinct MI300X"
    assert a.power_w(0) == 700.0
    assert a.throttle_reasons(0) == []


def test_a_worker_opens_its_rocm_device_through_the_visibility_lists() -> None:
    fake = FakeAmdSmi(count=4)
    env = {"ROCR_VISIBLE_DEVICES": "1,2,3", "HIP_VISIBLE_DEVICES": "2,0"}
    a = open_device_power("amdsmi", "cuda:0", "mi300x", "llama-3.1-8b", dict, env=env, amdsmi=fake,
                          install_handlers=False)
    assert a.count() == 1 and a.handles == [fake.gpus[3]]
    b = open_device_power("amdsmi", "cuda:1", "mi300x", "llama-3.1-8b", dict, env=env, amdsmi=fake,
                          install_handlers=False)
    assert b.handles == [fake.gpus[1]]


def test_asking_for_amdsmi_without_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "amdsmi", None)
    with pytest.raises(GpuInitError, match="amdsmi is not installed"):
        open_device_power("amdsmi", "cuda:0", "mi300x", "llama-3.1-8b", dict, env={}, install_handlers=False)
