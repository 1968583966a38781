"""Peak memory of streaming one NSD subject's sessions through ``prepare_fmri`` with the nsdgeneral mask.

Writes a synthetic subject in the real NSD formats at the real scale of subj01 (docs/data-formats.md 1.3, 1.6, 1.9):
the func1pt8mm grid (81, 104, 83), 750 trials per session, int16 betas (PSC x 300) zeroed outside a brain mask,
a 30,000-trial design over 10,000 images shown 3 times, an nsdgeneral mask of 15,724 voxels and prf-visualrois
inside it. One session file is written per format and the 40 session files are symbolic links to it (the loader
opens, decompresses and reads each of them in full, so memory and time are those of 40 distinct sessions; only the
disk holds one). Each format is then measured in a fresh process: peak resident memory (``ru_maxrss``) of
``gradbrain.data.prepare.prepare_fmri``, which calls ``nsd.subject.load_subject`` and writes the zarr store
(optionally of ``load_subject`` alone). Writes ``benchmarks/out/nsd_memory.json``.

    python benchmarks/nsd_memory.py                       # 40 sessions, nii.gz and hdf5 (about 15 min, 2 cores)
    python benchmarks/nsd_memory.py --sessions 2 --formats hdf5   # a quick check
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from gradbrain.data.nsd.paths import FUNC1PT8MM_GRID, TRIALS_PER_SESSION, betas_path  # noqa: E402
from gradbrain.data.nsd.subject import load_subject  # noqa: E402
from gradbrain.data.nsd.write import write_expdesign, write_ncsnr, write_roi  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "nsd_memory.json"
SUBJECT = 1
GRID = FUNC1PT8MM_GRID[SUBJECT]
AFFINE = np.array([[1.8, 0, 0, -72.0], [0, 1.8, 0, -92.7], [0, 0, 1.8, -74.7], [0, 0, 0, 1]])
NSDGENERAL_VOXELS = 15724  # subj01's nsdgeneral at 1.8 mm (the order of magnitude the issue's target is about)
IMAGES, REPEATS = 10_000, 3


def _ellipsoid(scale: tuple[float, float, float], centre: tuple[float, float, float]) -> np.ndarray:
    ijk = np.indices(GRID).astype(np.float32)
    r2 = sum(((ijk[a] - centre[a] * GRID[a]) / (scale[a] * GRID[a])) ** 2 for a in range(3))
    return r2 <= 1.0


def write_subject(root: Path, sessions: int, formats: list[str], seed: int = 0) -> dict:
    """Design, ROIs, ncsnr and one session of betas per format (linked as every session)."""
    rng = np.random.default_rng(seed)
    trials = IMAGES * REPEATS
    subjectim = np.stack([rng.choice(73_000, IMAGES, replace=False) + 1 for _ in range(8)])
    masterordering = rng.permutation(np.repeat(np.arange(1, IMAGES + 1), REPEATS))
    write_expdesign(root, masterordering[:trials], subjectim, np.sort(subjectim[0, :1000]))

    brain = _ellipsoid((0.45, 0.45, 0.45), (0.5, 0.5, 0.5))
    # nsdgeneral: a posterior shell of the brain, thinned at random to the real voxel count
    shell = brain & ~_ellipsoid((0.35, 0.35, 0.35), (0.5, 0.5, 0.5)) & (np.indices(GRID)[1] < GRID[1] * 0.45)
    cand = np.flatnonzero(shell)
    mask = np.zeros(GRID, bool)
    mask.flat[rng.choice(cand, min(NSDGENERAL_VOXELS, cand.size), replace=False)] = True
    left = np.indices(GRID)[0] < GRID[0] // 2
    outside = np.where(brain, 0, -1)
    general = np.where(mask, 1, outside)
    visual = np.where(mask & (np.indices(GRID)[1] < GRID[1] * 0.2), 1 + (np.indices(GRID)[2] % 2), outside)
    for atlas, vol, labels in (
        ("nsdgeneral", general, {1: "nsdgeneral"}),
        ("prf-visualrois", visual, {1: "V1v", 2: "V1d"}),
    ):
        halves = {"lh": np.where(left | (vol < 0), vol, 0), "rh": np.where(~left | (vol < 0), vol, 0)}
        write_roi(root, SUBJECT, atlas, vol, labels, AFFINE, halves)
    write_ncsnr(root, SUBJECT, np.where(brain, rng.uniform(0, 1.5, GRID), 0), AFFINE)

    # int16 PSC x 300 (PSC with SD 2), zero outside the brain; written as write_betas_session writes it, without
    # its float64 staging copy (4 GB at this size)
    raw = np.zeros(GRID + (TRIALS_PER_SESSION,), np.int16)
    for x in range(GRID[0]):
        inside = brain[x]
        raw[x][inside] = np.rint(rng.standard_normal((int(inside.sum()), TRIALS_PER_SESSION)) * 600)
    sizes = {}
    for fmt in formats:
        first = betas_path(root, SUBJECT, 1, fmt)
        first.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "nii.gz":
            nib.save(nib.Nifti1Image(raw, AFFINE), first)
        else:
            with h5py.File(first, "w") as f:
                f.create_dataset("betas", data=raw.transpose(3, 2, 1, 0), chunks=(TRIALS_PER_SESSION, 1, 1, 1))
        sizes[fmt] = first.stat().st_size
        for session in range(2, sessions + 1):
            link = betas_path(root, SUBJECT, session, fmt)
            link.unlink(missing_ok=True)
            link.symlink_to(first.name)
    return {"nsdgeneral_voxels": int(mask.sum()), "brain_voxels": int(brain.sum()), "session_file_bytes": sizes}


def measure(root: Path, sessions: int, fmt: str, what: str, out: Path) -> dict:
    """Run in a fresh process: peak RSS of prepare_fmri (or load_subject) on the subject under ``root``."""
    from gradbrain.data import prepare

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    rois = {"nsdgeneral": ["nsdgeneral"]}
    if what == "prepare_fmri":
        dataset = {
            "format": "nsd",
            "root": str(root),
            "sessions": {SUBJECT: sessions},
            "rois": rois,
            "beta_format": fmt,
            "heldout": "shared1000",
        }
        prepare.prepare_fmri(dataset, SUBJECT, out)
        import zarr

        shape = list(zarr.open_group(str(out), mode="r")["Y"].shape)
    else:
        shape = list(load_subject(root, SUBJECT, sessions, rois, fmt=fmt, log=lambda m: None).Y.shape)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "function": what,
        "format": fmt,
        "sessions": sessions,
        "Y_shape": shape,
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak / 1024),
        "rss_after_imports_mb": round(baseline / 1024),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=40)
    p.add_argument("--formats", nargs="+", default=["nii.gz", "hdf5"], choices=["nii.gz", "hdf5"])
    p.add_argument("--workdir", default="/tmp/gradbrain-nsd-memory", help="where the synthetic subject is written")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--functions", nargs="+", default=["prepare_fmri"], choices=["prepare_fmri", "load_subject"])
    p.add_argument("--measure", nargs=2, metavar=("FORMAT", "FUNCTION"), help=argparse.SUPPRESS)
    p.add_argument("--write", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    work = Path(args.workdir)
    if args.measure:
        fmt, what = args.measure
        print(json.dumps(measure(work / "nsd", args.sessions, fmt, what, work / f"sub-1-{fmt}.zarr")))
        return

    if args.write:
        t0 = time.perf_counter()
        written = write_subject(work / "nsd", args.sessions, args.formats)
        written["write_seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(written))
        return

    def child(*extra: str) -> dict:
        """Each step in its own process: Linux keeps a process's peak RSS across fork and exec, so a parent that
        had written the data would leave its own peak in every measurement."""
        cmd = [sys.executable, __file__, "--sessions", str(args.sessions), "--workdir", str(work), *extra]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        print(line, flush=True)
        return json.loads(line)

    written = child("--write", "--formats", *args.formats)
    runs = [child("--measure", fmt, what) for fmt in args.formats for what in args.functions]
    result = {
        "machine": f"{platform.machine()} {platform.system()}, {subprocess.getoutput('nproc')} cores",
        "date": time.strftime("%Y-%m-%d"),
        "grid": GRID,
        "trials_per_session": TRIALS_PER_SESSION,
        "images": IMAGES,
        "subject": written,
        "runs": runs,
        "target_mb": 4096,
        "within_target": all(r["peak_rss_mb"] <= 4096 for r in runs),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
