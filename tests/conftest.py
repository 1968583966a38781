"""Fixtures shared by the test packages; plain helpers live in tests/helpers (on pytest's pythonpath)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, fresh per test."""
    return np.random.default_rng(0)


@pytest.fixture
def http_server():
    """A Range-capable HTTP server on loopback (helpers.realdata.RangeServer), stopped after the test."""
    from helpers.realdata import RangeServer

    server = RangeServer.start()
    yield server
    server.stop()
