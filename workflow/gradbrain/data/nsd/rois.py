"""NSD's ROI atlases: ``.ctab`` label tables, volume and fsaverage label files, the voxel selection, V1 distances.

Volume atlases come as ``<atlas>.nii.gz`` with ``lh.``/``rh.`` halves; fsaverage atlases as ``{lh,rh}.<atlas>.mgz``
(docs/data-formats.md 1.9). prf-visualrois' ventral and dorsal halves V1v/V1d, V2v/V2d, V3v/V3d are merged into
V1, V2, V3, and ``distance_v1`` is measured from the V1 centroid of the voxel's hemisphere.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from gradbrain.data.nsd.paths import HEMIS, PathLike, ctab_path, fsaverage_label_path, roi_path
from gradbrain.data.nsd.read import read_mgh, read_nifti, require

_LOG = logging.getLogger(__name__)
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
    hemi = resolve_hemispheres(vols[0], dict(zip(HEMIS, vols[1:], strict=True)), affine, files)
    return Atlas(atlas, vols[0], hemi, table, files + [ctab]), affine


def midline(x_lh: np.ndarray, x_rh: np.ndarray) -> tuple[float, bool]:
    """The plane x = t that best separates two sets of x coordinates (mm), and whether ``x_lh`` lies below it.

    t is the midpoint between adjacent distinct coordinates that leaves the fewest points on the wrong side (the
    first such cut); for separable sets, halfway between the largest x of one side and the smallest of the other.
    """
    x_lh, x_rh = np.asarray(x_lh, dtype=np.float64), np.asarray(x_rh, dtype=np.float64)
    x = np.concatenate([x_lh, x_rh])
    order = np.argsort(x, kind="stable")
    xs, is_rh = x[order], np.r_[np.zeros(x_lh.size, bool), np.ones(x_rh.size, bool)][order]
    cuts = np.flatnonzero(np.diff(xs) > 0) + 1
    if not (x_lh.size and x_rh.size and cuts.size):
        raise ValueError("a midline needs points on both sides at different x")
    rh_below = np.cumsum(is_rh)[cuts - 1]
    lh_below = cuts - rh_below
    wrong_if_lh_below = rh_below + (x_lh.size - lh_below)
    wrong_if_lh_above = lh_below + (x_rh.size - rh_below)
    lh_is_below = wrong_if_lh_below.min() <= wrong_if_lh_above.min()
    k = cuts[np.argmin(wrong_if_lh_below if lh_is_below else wrong_if_lh_above)]
    return float((xs[k - 1] + xs[k]) / 2), bool(lh_is_below)


def resolve_hemispheres(
    combined: np.ndarray, hemi: Mapping[str, np.ndarray], affine: np.ndarray, files: Sequence[Path]
) -> dict[str, np.ndarray]:
    """The lh./rh. label volumes, with each voxel that the combined file labels but that both or neither of them
    label given to the hemisphere on its side of the midline.

    Near the midline the real files may label a voxel in both hemispheres or in neither. The midline is the plane
    x = t (scanner mm through ``affine``) that best separates the voxels each hemisphere file labels alone
    (:func:`midline`); the count of reassigned voxels is logged as a warning.
    """
    labelled = combined > 0
    in_lh, in_rh = hemi["lh"] > 0, hemi["rh"] > 0
    ambiguous = labelled & (in_lh == in_rh)
    if not ambiguous.any():
        return dict(hemi)

    def x_of(mask: np.ndarray) -> np.ndarray:
        return nib.affines.apply_affine(affine, np.argwhere(mask))[:, 0]

    try:
        t, lh_below = midline(x_of(in_lh & ~in_rh), x_of(in_rh & ~in_lh))
    except ValueError as exc:
        raise ValueError(
            f"{int(ambiguous.sum())} voxels labelled in {files[0]} are labelled in both or neither of {files[1]} "
            f"and {files[2]}, and those files label too few voxels alone to locate the midline; download them again"
        ) from exc
    x = x_of(ambiguous)
    left = x < t if lh_below else x > t
    where = tuple(np.argwhere(ambiguous).T)
    out = {h: np.array(v, copy=True) for h, v in hemi.items()}
    out["lh"][where] = np.where(left, combined[where], 0)
    out["rh"][where] = np.where(left, 0, combined[where])
    _LOG.warning(
        "%d voxels labelled in %s are labelled in both or neither of %s and %s; each was given the hemisphere on "
        "its side of the midline x = %.1f mm (%d lh, %d rh)",
        int(ambiguous.sum()), files[0], files[1], files[2], t, int(left.sum()), int((~left).sum()),
    )  # fmt: skip
    return out


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
    atlases: list[Atlas],
    rois: Mapping[str, Sequence[str] | str],
    log: Callable[[str], None],
    strict: bool = False,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Flat indices of the union of requested ROIs, and per-voxel roi, atlas, hemi and memberships.

    Every labelled voxel is in exactly one of its atlas's hemisphere volumes. A voxel labelled by several requested
    atlases takes ``roi``/``atlas``/``hemi`` from the first one in ``rois`` order; ``memberships`` lists all of them
    as ``atlas/roi`` joined by ';'. A ROI named in ``rois`` that labels no voxel is a warning (a localiser ROI is
    drawn in each subject's data and may be empty in one), with ``strict`` an error; a label of an atlas requested
    as ``all`` that labels no voxel is only logged through ``log``.
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
            if not hit.any() and rois[atlas.name] == "all":
                log(f"ROI {atlas.name}/{name} has no voxels in {atlas.files[0]}")
            elif not hit.any():
                message = (
                    f"ROI {atlas.name}/{name} has no voxels in {atlas.files[0]}, so this subject's targets leave it "
                    "out; if that is expected, remove it from the dataset's rois, else check the atlas and space"
                )
                if strict:
                    raise ValueError(f"{message} (an error because the dataset sets strict: true)")
                _LOG.warning("%s (strict: true makes this an error)", message)
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
        labelled = c >= 0
        first = labelled & (roi == "")
        roi[first] = np.array(names, dtype=object)[c[first]]
        atlas_col[first] = atlas.name
        hemi[first] = np.where(lh[first], "lh", "rh")  # one of lh, rh: volume_atlas / surface_atlas see to it
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
    """Centroid (mm) of V1 (V1v + V1d of prf-visualrois) per hemisphere, from ``coords_of`` (flat indices -> (n, 3)
    mm). V1 voxels whose coordinates are NaN (no MNI location) are left out, and their count logged as a warning."""
    if atlas is None:
        raise ValueError(missing_hint)
    ids = atlas.groups.get("V1")
    if not ids:
        raise ValueError(f"{atlas.files[-1]} has no V1v/V1d labels, so V1 is missing. {missing_hint}")
    out = {}
    for hemi in HEMIS:
        where = np.flatnonzero(np.isin(atlas.hemi[hemi].ravel(), ids))
        xyz = coords_of(where)
        valid = np.isfinite(xyz).all(axis=1)
        if not valid.all():
            _LOG.warning(
                "%d of %d %s V1 voxels of %s have no coordinates (no MNI location); the V1 centroid leaves them out",
                int((~valid).sum()), valid.size, hemi, atlas.files[0],
            )  # fmt: skip
        if valid.any():
            out[hemi] = xyz[valid].mean(axis=0)
    return out


def distance_v1(xyz: np.ndarray, hemi: np.ndarray, centroids: Mapping[str, np.ndarray], hint: str) -> np.ndarray:
    """Euclidean distance (mm) of each voxel's ``xyz`` (n, 3) from the V1 centroid of its hemisphere (``hemi``)."""
    xyz, hemi = np.asarray(xyz, dtype=np.float64), np.asarray(hemi)
    out = np.full(len(xyz), np.nan)
    for h in HEMIS:
        rows = hemi == h
        if not rows.any():
            continue
        if h not in centroids:
            raise ValueError(f"V1 has no voxels with coordinates in the {h} hemisphere. {hint}")
        out[rows] = np.linalg.norm(xyz[rows] - centroids[h], axis=1)
    return out
