"""gradbrain.data.download: the terms gate, the file lists, HTTP transfers and the THINGS archive.

The file-list tests check the lists against the loaders; the HTTP tests run against a Range-capable server on
loopback standing in for OSF (which cannot be reached here); the archive tests unpack a real password-protected zip
made by Info-ZIP. The S3 transfers are tested in test_transfer_s3.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, realdata

from gradbrain.data.download import files as dl
from gradbrain.data.download import things_images, transfer
from gradbrain.data.nsd import read as nsd_read
from gradbrain.data.nsd.paths import BETA_VERSION, COMPLETED_SESSIONS, required_files
from gradbrain.data.nsd.subject import load_subject
from gradbrain.data.things_meg import read as meg_read
from gradbrain.data.things_meg.layout import epochs_path
from gradbrain.data.things_meg.write import write_image

needs_zip = pytest.mark.skipif(shutil.which("zip") is None, reason="Info-ZIP's zip is needed to make encrypted zips")


def test_nsd_terms_gate():
    dl.require_nsd_terms(True, "nsd")
    with pytest.raises(dl.TermsNotAccepted) as err:
        dl.require_nsd_terms(False, "my_nsd")
    msg = str(err.value)
    assert "datasets.my_nsd.accept_terms" in msg and dl.NSD_TERMS_URL in msg and "Data Access Agreement" in msg


# ---------------------------------------------------------------------------------------------- what is fetched
def test_nsd_keys_are_exactly_what_the_loader_needs(tmp_path):
    """A root holding only the listed keys loads; every listed key exists in the full tree; nothing more is listed."""
    full = tmp_path / "full"
    realdata.build_nsd(full, n_sessions=3, fmt="hdf5")
    rois = {"streams": ["midventral", "ventral"]}
    keys = required_files(1, 2, rois, fmt="hdf5") + dl.nsd_shared_keys()
    assert all((full / k).is_file() for k in keys)
    assert not any("session03" in k or k.endswith(".nii.gz") and "betas_session" in k for k in keys)
    part = tmp_path / "part"
    for key in keys:
        (part / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(full / key, part / key)
    got = load_subject(part, 1, 2, rois, fmt="hdf5", log=lambda m: None)
    want = load_subject(full, 1, 2, rois, fmt="hdf5", log=lambda m: None)
    np.testing.assert_array_equal(got.Y, want.Y)
    np.testing.assert_array_equal(nsd_read.read_images(part, got.nsd_ids), nsd_read.read_images(full, got.nsd_ids))
    for key in keys:  # each listed file is needed: without it the loaders fail
        if "stim_info" in key or "nsd_stimuli" in key:
            continue
        (part / key).rename(part / (key + ".off"))
        with pytest.raises((FileNotFoundError, ValueError)):
            load_subject(part, 1, 2, rois, fmt="hdf5", log=lambda m: None)
        (part / (key + ".off")).rename(part / key)


def test_fsaverage_and_meg_keys():
    keys = required_files(2, 1, {"prf-visualrois": "all"}, space="fsaverage")
    assert "nsddata_betas/ppdata/subj02/fsaverage/betas_fithrf_GLMdenoise_RR/lh.betas_session01.mgh" in keys
    assert "nsddata_betas/ppdata/subj02/fsaverage/betas_fithrf_GLMdenoise_RR/rh.ncsnr.mgh" in keys
    assert "nsddata/freesurfer/fsaverage/label/rh.prf-visualrois.mgz" in keys
    files = dl.things_meg_files(3)
    assert files == [f"derivatives/preprocessed/preprocessed_P3-epo{s}.fif" for s in ("", "-1", "-2", "-3")]
    assert dl.openneuro_key(files[2]) == "ds004212/derivatives/preprocessed/preprocessed_P3-epo-2.fif"
    assert Path(files[0]) == epochs_path(Path("."), 3)


# ----------------------------------------------------------------------------------------------------------- HTTP
def test_http_download_follows_redirects_and_resumes(http_server, tmp_path):
    data = realdata.random_bytes(300_000, seed=6)
    http_server.files["/images_THINGS.zip"] = data
    dest = tmp_path / "images_THINGS.zip"
    dest.with_name(dest.name + ".part").write_bytes(data[:1000])
    transfer.download_url(f"{http_server.base}/redirect/images_THINGS.zip", dest)
    assert dest.read_bytes() == data
    assert [r["Range"] for r in http_server.requests] == ["bytes=1000-", "bytes=1000-"]  # redirect keeps the range


def test_http_dropped_connection_resumes(http_server, tmp_path, monkeypatch):
    monkeypatch.setattr(transfer.time, "sleep", lambda s: None)
    data = realdata.random_bytes(200_000, seed=7)
    http_server.files["/a.zip"] = data
    http_server.cut_first = 1
    dest = tmp_path / "a.zip"
    transfer.download_url(f"{http_server.base}/a.zip", dest, chunk_size=10_000)
    assert dest.read_bytes() == data
    assert [r["Range"] for r in http_server.requests] == [None, "bytes=100000-"]


def test_http_server_ignoring_range_restarts_and_complete_part_finishes(http_server, tmp_path):
    data = realdata.random_bytes(50_000, seed=8)
    http_server.files["/a.zip"] = data
    dest = tmp_path / "a.zip"
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(b"garbage" * 10)
    http_server.ignore_range = True
    transfer.download_url(f"{http_server.base}/a.zip", dest)
    assert dest.read_bytes() == data
    dest.unlink()
    part.write_bytes(data)
    http_server.ignore_range = False
    transfer.download_url(f"{http_server.base}/a.zip", dest)  # 416: the part already holds every byte
    assert dest.read_bytes() == data and not part.exists()


def test_http_missing_file(http_server, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"/nothing\.zip.*404"):
        transfer.download_url(f"{http_server.base}/nothing.zip", tmp_path / "x.zip")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------- THINGS archive
def test_password_comes_from_the_environment_only():
    with pytest.raises(dl.TermsNotAccepted) as err:
        things_images.things_password({})
    assert dl.THINGS_PASSWORD_ENV in str(err.value) and dl.THINGS_PASSWORD_URL in str(err.value)
    assert things_images.things_password({dl.THINGS_PASSWORD_ENV: "s3cret"}) == "s3cret"


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("things")
    ids = ["aardvark/aardvark_01b.jpg", "aardvark/aardvark_02n.jpg", "coat_rack/coat_rack_13s.jpg"]
    rng = np.random.default_rng(0)
    for sid in ids:
        write_image(base / "src", sid, rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    (base / "src" / "object_images" / "README.txt").write_text("not an image")
    return base, ids


@needs_zip
def test_unpack_password_protected_archive(image_tree, tmp_path):
    base, ids = image_tree
    archive = realdata.zip_with_password(base / "src" / "object_images", tmp_path / "images_THINGS.zip", "pw")
    with zipfile.ZipFile(archive) as zf:
        assert all(i.flag_bits & 0x1 for i in zf.infolist() if not i.is_dir()), "the fixture must be encrypted"
    out = things_images.unpack_things_images(archive, tmp_path / "images", "pw")
    assert out == tmp_path / "images" / "object_images"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) == ids
    for sid in ids:
        assert (out / sid).read_bytes() == (base / "src" / "object_images" / sid).read_bytes()
    np.testing.assert_array_equal(
        meg_read.read_images(tmp_path / "images", ids), meg_read.read_images(base / "src", ids)
    )


@needs_zip
def test_nested_per_letter_archives(image_tree, tmp_path):
    """Older THINGS releases ship object_images_A-C.zip etc., with an extra folder level; the tree is the same."""
    base, ids = image_tree
    nested = tmp_path / "nested" / "THINGS" / "Images"
    (nested / "object_images_A-C").mkdir(parents=True)
    shutil.copytree(base / "src" / "object_images", nested / "object_images_A-C" / "object_images_A-C")
    realdata.zip_with_password(nested / "object_images_A-C", nested / "object_images_A-C.zip", "pw")
    shutil.rmtree(nested / "object_images_A-C")
    archive = realdata.zip_with_password(tmp_path / "nested" / "THINGS", tmp_path / "outer.zip", "pw")
    out = things_images.unpack_things_images(archive, tmp_path / "images", "pw")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) == ids


@needs_zip
def test_wrong_password_and_truncated_archive_leave_nothing(image_tree, tmp_path):
    base, _ = image_tree
    archive = realdata.zip_with_password(base / "src" / "object_images", tmp_path / "images_THINGS.zip", "pw")
    with pytest.raises(PermissionError, match=f"{dl.THINGS_PASSWORD_ENV}.*images_THINGS.zip"):
        things_images.unpack_things_images(archive, tmp_path / "images", "wrong")
    assert not (tmp_path / "images" / "object_images").exists()
    assert not (tmp_path / "images" / "object_images.partial").exists()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(zipfile.BadZipFile, match="download it again"):
        things_images.unpack_things_images(truncated, tmp_path / "images", "pw")
    assert not (tmp_path / "images" / "object_images").exists()


# ------------------------------------------------------------------------------------------------- in the DAG
def test_targets_terms_and_root_patterns():
    nsd_ds = {
        "format": "nsd",
        "root": "data/nsd/",
        "download": True,
        "accept_terms": False,
        "sessions": {1: 2},
        "rois": {"streams": ["ventral"]},
        "beta_format": "hdf5",
        "space": "func1pt8mm",
        "beta_version": BETA_VERSION,
    }
    meg_ds = {
        "format": "things_meg",
        "root": "/abs/ds004212",
        "images_root": "/abs/things",
        "download": True,
        "subjects": [1, 2],
    }
    sim_ds = {**nsd_ds, "simulated": "backprop", "root": "data/sim/backprop/nsd"}
    datasets = {"nsd": nsd_ds, "meg": meg_ds, "sim": sim_ds}
    assert list(dl.download_datasets(datasets, "nsd")) == ["nsd"], "a simulated dataset is never downloaded"
    keys = required_files(1, 2, ["streams"], fmt="hdf5")
    assert dl.download_targets(nsd_ds, 1) == [f"data/nsd/{k}" for k in keys]
    assert dl.download_targets(nsd_ds) == [f"data/nsd/{k}" for k in dl.nsd_shared_keys()]
    assert dl.download_targets(meg_ds, 2) == [f"/abs/ds004212/{f}" for f in dl.things_meg_files(2)]
    assert dl.download_targets(meg_ds)[-1] == "/abs/things/object_images" and len(dl.download_targets(meg_ds)) == 9
    assert dl.nsd_terms(datasets, "data/nsd") == {"accepted": False, "dataset": "nsd"}
    nsd_ds["accept_terms"] = True
    assert dl.nsd_terms(datasets, "data/nsd")["accepted"]
    assert dl.image_urls(datasets) == {"/abs/things": dl.THINGS_IMAGES_URL}
    pattern = dl.roots_pattern(["data/nsd/", "/abs/a.b"])
    assert re.fullmatch(pattern, "data/nsd") and re.fullmatch(pattern, "/abs/a.b")
    assert not re.fullmatch(pattern, "/abs/aXb"), "roots are matched literally"
    assert dl.roots_pattern([]) == "__none__"


def test_paper_dry_run_lists_the_download_jobs():
    """The paper's study plans without data: one job per needed file, counted here from the NSD manual's numbers."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(REPO),
            "--configfile",
            str(REPO / "config" / "paper.yaml"),
            "--replace-workflow-config",
            "--workflow-profile",
            "none",
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M))
    # betas of every completed session, ncsnr, 4 files (3 volumes + .ctab) of each of the 2 atlases and the MNI
    # transform (distance_space: mni) per subject
    nsd_files = sum(COMPLETED_SESSIONS.values()) + 8 + 8 * 2 * 4 + 8 + len(dl.nsd_shared_keys())
    assert int(counts["download_nsd"]) == nsd_files == 367
    assert int(counts["download_things_meg"]) == 4 * (1 + dl.THINGS_MEG_SPLITS)
    assert int(counts["download_things_images"]) == int(counts["unpack_things_images"]) == 1
    assert int(counts["prepare_fmri"]) == 8 and int(counts["prepare_meg"]) == 4
