"""Shared fixtures. Tests use the real shared images (../shared/data or $MOEISR_DATA)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
