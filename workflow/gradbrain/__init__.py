"""gradbrain: forward activations and backpropagated gradients of vision models, mapped onto fMRI and MEG.

The packages and their one-way order are described in docs/architecture.md.
"""

from pathlib import Path

__version__ = "0.1.0"

RESOURCES = Path(__file__).resolve().parents[2] / "resources"
"""The small files the workflow ships: model catalogue, THINGS-MEG channel names, COCO categories."""
