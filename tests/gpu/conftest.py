"""The CUDA checks (marker ``gpu``): skipped without a CUDA device; ``benchmarks/gpu_check.sh`` runs them on one.

``GRADBRAIN_TEST_DEVICE=cpu`` runs them on the CPU instead: the check's smoke mode, which exercises every code path
of these tests before a GPU sees them (the CUDA-against-CPU comparisons are then trivially equal).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from helpers.models import SMALL

from gradbrain.models.catalogue import model_spec
from gradbrain.models.load import LoadedModel, load_model
from gradbrain.simulation import photos

DEVICE = os.environ.get("GRADBRAIN_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "")
NO_DEVICE = "needs a CUDA device (torch.cuda.is_available() is False); benchmarks/gpu_check.sh runs these on one"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") and not DEVICE:
        pytest.skip(NO_DEVICE)


@pytest.fixture
def device() -> str:
    """The device under test: ``cuda`` (or ``GRADBRAIN_TEST_DEVICE``)."""
    return DEVICE


@pytest.fixture
def build():
    """``build(family, objective, device)``: a small random-init model of ``family`` (tests/helpers/models.py),
    the same weights on every device (seeded, initialised on the CPU before the move)."""

    def make(family: str, objective: str, device: str) -> LoadedModel:
        torch.manual_seed(0)
        return load_model(model_spec(family, {**SMALL[family], "objective": objective}), device=device)

    return make


@pytest.fixture(scope="session")
def photo_crops():
    """``photo_crops(n, size)``: uint8 crops of scikit-image's photographs (natural image statistics, not noise)."""
    cache: dict[tuple[int, int], np.ndarray] = {}

    def crops(n: int, size: int) -> np.ndarray:
        if (n, size) not in cache:
            cache[n, size] = photos.crops(n, size, seed=7)[0]
        return cache[n, size]

    return crops
