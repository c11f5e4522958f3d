from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("wattserve", derandomize=True, database=None, deadline=None)
settings.load_profile("wattserve")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "anchors").is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    return DATA
