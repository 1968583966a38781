"""The voxel grid, affine and visual-ROI table of the tiny NSD trees the tests write (real NSD: func1pt8mm grids of
about 81 x 104 x 83 voxels), and the hemisphere split of their label volumes."""

from __future__ import annotations

import numpy as np

GRID = (6, 5, 4)
AFFINE = np.array([[1.8, 0, 0, -5.0], [0, 1.8, 0, -4.0], [0, 0, 1.8, -3.0], [0, 0, 0, 1]])
VISUAL = {1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"}
VISUAL_VOXELS = {  # left hemisphere for i < 3, right for i >= 3
    (1, 1, 0): 1,
    (1, 2, 0): 1,
    (2, 1, 0): 2,
    (2, 1, 1): 2,
    (1, 3, 1): 3,
    (0, 4, 2): 7,
    (4, 1, 0): 1,
    (4, 2, 0): 2,
    (5, 1, 1): 2,
    (3, 3, 1): 4,
    (4, 4, 3): 5,
}
"""Labels of VISUAL at a few voxels of GRID, both hemispheres."""


def hemispheres(vol: np.ndarray) -> dict[str, np.ndarray]:
    """lh (first axis i < 3) and rh halves of a label volume; -1 (outside the brain) is kept in both."""
    left = np.arange(GRID[0])[:, None, None] < GRID[0] // 2
    return {"lh": np.where(left | (vol < 0), vol, 0), "rh": np.where(~left | (vol < 0), vol, 0)}
