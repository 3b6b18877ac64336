"""System-test fixtures: whether the long versions run (``--soak``)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def soak(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--soak"))
