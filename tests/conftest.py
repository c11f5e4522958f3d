from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "anchors").is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    return DATA
