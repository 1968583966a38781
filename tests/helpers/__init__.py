"""Helpers shared by the test modules (``tests/`` is on pytest's pythonpath, see pyproject.toml)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository root."""
