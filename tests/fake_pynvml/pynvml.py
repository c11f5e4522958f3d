"""`import pynvml` in a subprocess on a machine with no NVIDIA GPU: the module-level API of
nvidia-ml-py over tests/fake_nvml.py's FakeNvml, for tests that start `wattserve agent --power nvml`.

Put this folder first on PYTHONPATH. FAKE_NVML_GPUS sets the GPU count (default 1), FAKE_NVML_ROOT=0
makes every setter answer NVML_ERROR_NO_PERMISSION. Device state that outlives a process on real
hardware (the power limit, the locked clocks) lives in the JSON file FAKE_NVML_STATE names, as the
driver keeps it across processes: a test can start an agent, stop it, and read what the GPUs were
left holding.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fake_nvml import FakeNvml, NVMLError  # noqa: E402

_STATE = os.environ.get("FAKE_NVML_STATE")
_fake = FakeNvml(count=int(os.environ.get("FAKE_NVML_GPUS", "1")), root=os.environ.get("FAKE_NVML_ROOT", "1") != "0")


def _load() -> None:
    if _STATE and Path(_STATE).is_file():
        state = json.loads(Path(_STATE).read_text())
        for d, s in zip(_fake.devices, state["devices"], strict=False):
            d.limit_mw = int(s["limit_mw"])
            d.locked = tuple(s["locked"]) if s["locked"] else None


def _save() -> None:
    if _STATE:
        doc = {"devices": [{"limit_mw": d.limit_mw, "locked": list(d.locked) if d.locked else None,
                            "default_mw": d.default_mw} for d in _fake.devices]}
        tmp = Path(_STATE + ".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, _STATE)


_load()


def _saving(fn: Any) -> Any:
    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        finally:
            _save()
    return call


def __getattr__(name: str) -> Any:
    attr = getattr(_fake, name)
    if name.startswith("nvmlDeviceSet") or name.startswith("nvmlDeviceReset"):
        return _saving(attr)
    return attr


__all__ = ["NVMLError"]
