"""NSD's ROI atlases: ``.ctab`` label tables, volume and fsaverage label files, the voxel selection, V1 distances.

Volume atlases come as ``<atlas>.nii.gz`` with ``lh.``/``rh.`` halves; fsaverage atlases as ``{lh,rh}.<atlas>.mgz``
(docs/data-formats.md 1.9). prf-visualrois' ventral and dorsal halves V1v/V1d, V2v/V2d, V3v/V3d are merged into
V1, V2, V3, and ``distance_v1`` is measured from the V1 centroid of the voxel's hemisphere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gradbrain.data.nsd.paths import HEMIS, PathLike, ctab_path, fsaverage_label_path, roi_path
from gradbrain.data.nsd.read import read_mgh, read_nifti, require

_VISUAL_HALVES = re.compile(r"^(V[123])[vd]$")


def read_ctab(path: PathLike) -> dict[int, str]:
    """Label id -> name from a ``.ctab`` (``<id> <name>`` per line; names stripped of trailing tabs)."""
    path = Path(path)
    require(path, "ROI label table", "Download the .ctab that sits beside the atlas in nsddata/freesurfer.")
    table = {}
    for line in path.read_text().splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2:
            table[int(parts[0])] = parts[1].strip()
    return table


def _roi_groups(atlas: str, table: Mapping[int, str]) -> dict[str, list[int]]:
    """ROI name -> label ids; prf-visualrois halves V1v/V1d, V2v/V2d, V3v/V3d merge into V1, V2, V3."""
    groups: dict[str, list[int]] = {}
    for k, name in sorted(table.items()):
        if k <= 0:
            continue
        if atlas == "prf-visualrois":
            name = _VISUAL_HALVES.sub(r"\1", name)
        groups.setdefault(name, []).append(k)
    return groups


def _requested_groups(
    atlas: str, wanted: Sequence[str] | str, table: Mapping[int, str], ctab: Path
) -> dict[str, list[int]]:
    groups = _roi_groups(atlas, table)
    if wanted == "all":
        return groups
    if isinstance(wanted, str):
        wanted = [wanted]
    unknown = [name for name in wanted if name not in groups]
    if unknown:
        raise ValueError(
            f"ROIs {unknown} are not in atlas {atlas!r} ({ctab}); available: {sorted(groups)}. "
            "Fix the rois entry in the config."
        )
    return {name: groups[name] for name in wanted}


def _read_label_volume(path: Path, what: str, hint: str) -> tuple[np.ndarray, np.ndarray]:
    data, affine, _ = read_nifti(path, what, hint)
    return np.rint(data).astype(int), affine


@dataclass
class Atlas:
    """One atlas's labels at the candidate voxels, with hemisphere labels."""

    name: str
    combined: np.ndarray
    hemi: dict[str, np.ndarray]
    table: dict[int, str]
    files: list[Path]
    n_lh: int = 0

    @property
    def groups(self) -> dict[str, list[int]]:
        return _roi_groups(self.name, self.table)


def volume_atlas(root: PathLike, subject: int, atlas: str, space: str) -> tuple[Atlas, np.ndarray]:
    """A subject's volume atlas (combined, lh., rh. files and the ``.ctab``) and the affine of its files."""
    hint = (
        f"Download nsddata/ppdata/subj{subject:02d}/{space}/roi/{{,lh.,rh.}}{atlas}.nii.gz "
        "or remove the atlas from the config's rois."
    )
    files = [roi_path(root, subject, atlas, h, space) for h in (None, *HEMIS)]
    vols, affine = [], None
    for path in files:
        vol, aff = _read_label_volume(path, f"ROI file of atlas {atlas!r}", hint)
        if vols and vol.shape != vols[0].shape:
            raise ValueError(f"{path} has shape {vol.shape} but {files[0]} has {vols[0].shape}")
        vols.append(vol)
        affine = aff if affine is None else affine
    ctab = ctab_path(root, subject, atlas)
    table = read_ctab(ctab)
    return Atlas(atlas, vols[0], dict(zip(HEMIS, vols[1:], strict=True)), table, files + [ctab]), affine


def surface_atlas(root: PathLike, atlas: str) -> Atlas:
    """A group atlas on fsaverage: lh vertices first, then rh (``n_lh`` of them), and its ``.ctab``."""
    hint = (
        f"Download nsddata/freesurfer/fsaverage/label/{{lh,rh}}.{atlas}.mgz or remove the atlas from the config's rois."
    )
    files = [fsaverage_label_path(root, atlas, h) for h in HEMIS]
    hemi = {
        h: np.rint(read_mgh(p, f"fsaverage label of atlas {atlas!r}", hint)).astype(int).ravel()
        for h, p in zip(HEMIS, files, strict=True)
    }
    combined = np.concatenate([hemi["lh"], hemi["rh"]])
    n = len(hemi["lh"])
    masked = {
        "lh": np.concatenate([hemi["lh"], np.zeros(len(hemi["rh"]), int)]),
        "rh": np.concatenate([np.zeros(n, int), hemi["rh"]]),
    }
    ctab = ctab_path(root, None, atlas)
    return Atlas(atlas, combined, masked, read_ctab(ctab), files + [ctab], n_lh=n)


def select_voxels(
    atlases: list[Atlas], rois: Mapping[str, Sequence[str] | str], log: Callable[[str], None]
) -> tuple[np.ndarray, pd.DataFrame]:
    """Flat indices of the union of requested ROIs, and per-voxel roi, atlas, hemi and memberships.

    A voxel labelled by several requested atlases takes ``roi``/``atlas``/``hemi`` from the first one in ``rois``
    order; ``memberships`` lists all of them as ``atlas/roi`` joined by ';'.
    """
    picks = []
    union = np.zeros(atlases[0].combined.size, dtype=bool)
    for atlas in atlases:
        wanted = _requested_groups(atlas.name, rois[atlas.name], atlas.table, atlas.files[-1])
        flat = atlas.combined.ravel()
        code = np.full(flat.shape, -1)
        names = list(wanted)
        for c, name in enumerate(names):
            hit = np.isin(flat, wanted[name])
            if not hit.any():
                log(f"ROI {atlas.name}/{name} has no voxels in {atlas.files[0]}")
            code[hit] = c
        union |= code >= 0
        picks.append((atlas, names, code))
    flat_idx = np.flatnonzero(union)
    if flat_idx.size == 0:
        raise ValueError(f"the requested ROIs {dict(rois)} select no voxels")
    n = flat_idx.size
    roi = np.full(n, "", dtype=object)
    atlas_col = np.full(n, "", dtype=object)
    hemi = np.full(n, "", dtype=object)
    memberships = [[] for _ in range(n)]
    for atlas, names, code in picks:
        c = code[flat_idx]
        lh = atlas.hemi["lh"].ravel()[flat_idx] > 0
        rh = atlas.hemi["rh"].ravel()[flat_idx] > 0
        labelled = c >= 0
        ambiguous = labelled & (lh == rh)
        if ambiguous.any():
            raise ValueError(
                f"{int(ambiguous.sum())} voxels labelled in {atlas.files[0]} are labelled in both or neither of "
                f"{atlas.files[1]} and {atlas.files[2]}; the hemisphere files do not match the combined file, "
                "download them again"
            )
        first = labelled & (roi == "")
        roi[first] = np.array(names, dtype=object)[c[first]]
        atlas_col[first] = atlas.name
        hemi[first] = np.where(lh[first], "lh", "rh")
        for v in np.flatnonzero(labelled):
            memberships[v].append(f"{atlas.name}/{names[c[v]]}")
    table = pd.DataFrame(
        {
            "hemi": hemi.astype(str),
            "roi": roi.astype(str),
            "atlas": atlas_col.astype(str),
            "memberships": [";".join(m) for m in memberships],
        }
    )
    return flat_idx, table


def v1_centroids(
    atlas: Atlas | None, coords_of: Callable[[np.ndarray], np.ndarray], missing_hint: str
) -> dict[str, np.ndarray]:
    """Centroid (mm) of V1 (V1v + V1d of prf-visualrois) per hemisphere."""
    if atlas is None:
        raise ValueError(missing_hint)
    ids = atlas.groups.get("V1")
    if not ids:
        raise ValueError(f"{atlas.files[-1]} has no V1v/V1d labels, so V1 is missing. {missing_hint}")
    out = {}
    for hemi in HEMIS:
        where = np.flatnonzero(np.isin(atlas.hemi[hemi].ravel(), ids))
        if where.size:
            out[hemi] = coords_of(where).mean(axis=0)
    return out


def distance_v1(table: pd.DataFrame, centroids: Mapping[str, np.ndarray], hint: str) -> np.ndarray:
    """Euclidean distance (mm) of each voxel (``x_mm, y_mm, z_mm``) from the V1 centroid of its hemisphere."""
    xyz = table[["x_mm", "y_mm", "z_mm"]].to_numpy()
    out = np.full(len(table), np.nan)
    for hemi in HEMIS:
        rows = table["hemi"].to_numpy() == hemi
        if not rows.any():
            continue
        if hemi not in centroids:
            raise ValueError(f"V1 has no voxels in the {hemi} hemisphere. {hint}")
        out[rows] = np.linalg.norm(xyz[rows] - centroids[hemi], axis=1)
    return out
