"""Bad real-data input through the prepare stage: each error names the file and what to do, and no output is left.

The trees are written in the real formats (tests/helpers/realdata.py); each test breaks one thing the way a failed or
incomplete download would.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import realdata

from gradbrain.data import prepare
from gradbrain.data.nsd.paths import betas_path, stimuli_path
from gradbrain.data.nsd.read import NSDFileError
from gradbrain.data.nsd.subject import load_subject
from gradbrain.data.things_meg.layout import epochs_path

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.set_index")
ROIS = {"prf-visualrois": ["V1", "V2"]}
TRIALS = 60


def fmri_dataset(root: Path, sessions: int = 2, **extra) -> dict:
    return {
        "name": "nsd",
        "format": "nsd",
        "modality": "fmri",
        "root": str(root),
        "subjects": [1],
        "sessions": {1: sessions},
        "rois": ROIS,
        "trials_per_session": TRIALS,
        **extra,
    }


def meg_dataset(root: Path, images: Path) -> dict:
    return {
        "name": "things_meg",
        "format": "things_meg",
        "modality": "meg",
        "root": str(root),
        "images_root": str(images),
        "subjects": [1],
        "heldout": "test",
    }


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("trees")
    realdata.build_nsd(base / "nsd", n_sessions=2, trials=TRIALS)
    realdata.build_things_meg(base / "meg", base / "images")
    return base


def no_output(out: Path) -> bool:
    return not out.exists() and not out.with_name(out.name + ".tmp").exists()


def test_good_trees_prepare(trees, tmp_path):
    """The baseline the other tests break: both trees prepare, and the fMRI store holds load_subject's targets."""
    out = prepare.prepare_fmri(fmri_dataset(trees / "nsd"), 1, tmp_path / "fmri.zarr")
    direct = load_subject(trees / "nsd", 1, 2, ROIS, trials_per_session=TRIALS, log=lambda m: None)
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["Y"][:], direct.Y)
    assert prepare.prepare_meg(meg_dataset(trees / "meg", trees / "images"), 1, tmp_path / "meg.zarr").is_dir()


def test_missing_session(trees, tmp_path):
    out = tmp_path / "sub-1.zarr"
    with pytest.raises(FileNotFoundError) as err:
        prepare.prepare_fmri(fmri_dataset(trees / "nsd", sessions=3), 1, out)
    msg = str(err.value)
    assert str(betas_path(trees / "nsd", 1, 3)) in msg and "n_sessions" in msg and "download" in msg
    assert no_output(out)


@pytest.mark.parametrize("keep", [0.6, 0.02])
def test_truncated_nifti(trees, tmp_path, keep):
    root = tmp_path / "nsd"
    shutil.copytree(trees / "nsd", root)
    path = betas_path(root, 1, 2)
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    out = tmp_path / "sub-1.zarr"
    with pytest.raises(NSDFileError) as err:
        prepare.prepare_fmri(fmri_dataset(root), 1, out)
    assert str(path) in str(err.value) and "download it again" in str(err.value)
    assert no_output(out)


def test_session_shorter_than_the_configured_trials(trees, tmp_path):
    out = tmp_path / "sub-1.zarr"
    with pytest.raises(ValueError) as err:
        prepare.prepare_fmri(fmri_dataset(trees / "nsd", trials_per_session=TRIALS - 20), 1, out)
    assert str(betas_path(trees / "nsd", 1, 1)) in str(err.value) and "trials_per_session" in str(err.value)
    assert no_output(out)


def test_split_fif_missing(trees, tmp_path):
    root = tmp_path / "meg"
    shutil.copytree(trees / "meg", root)
    missing = epochs_path(root, 1).with_name("preprocessed_P1-epo-2.fif")
    missing.unlink()
    out = tmp_path / "sub-1.zarr"
    with pytest.raises(FileNotFoundError) as err:
        prepare.prepare_meg(meg_dataset(root, trees / "images"), 1, out)
    assert str(missing) in str(err.value) and "together" in str(err.value) and "ds004212" in str(err.value)
    assert no_output(out)


def test_image_missing_from_the_brick(trees):
    read = prepare.image_reader(fmri_dataset(trees / "nsd"))
    assert read(["nsd-00003", "nsd-00079"]).shape == (2, 32, 32, 3)
    with pytest.raises(ValueError) as err:
        read(["nsd-00003", "nsd-00080"])
    assert str(stimuli_path(trees / "nsd")) in str(err.value) and "[80]" in str(err.value)


def test_things_image_missing(trees, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(trees / "images", images)
    ids = prepare.dataset_stimulus_ids(meg_dataset(trees / "meg", images))
    (images / "object_images" / ids[0]).unlink()
    with pytest.raises(FileNotFoundError) as err:
        prepare.image_reader(meg_dataset(trees / "meg", images))(list(ids[:3]))
    assert str(images / "object_images" / ids[0]) in str(err.value) and "THINGS_PASSWORD" in str(err.value)
