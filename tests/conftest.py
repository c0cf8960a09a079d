"""Shared fixtures. Tests use the real shared images (../shared/data or $MOEISR_DATA), found by tests/shared_data.py:
the `shared_data` fixture or the `data` marker skips a test without them, or fails it when CI is set."""

from __future__ import annotations

import pytest
import torch
from shared_data import require_data_root


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if item.get_closest_marker("data") is not None:
        require_data_root()


@pytest.fixture
def shared_data():
    """The shared data root (the library's rule); skips without it, fails under CI."""
    return require_data_root()


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
