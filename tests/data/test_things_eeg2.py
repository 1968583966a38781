"""THINGS-EEG2 reader on files in the released format: image order, splits, averaging, z-scoring, the store, errors."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from gradbrain import store
from gradbrain.data import prepare
from gradbrain.data.things_eeg2.layout import CHANNELS, EPOCHS, eeg_path, metadata_path
from gradbrain.data.things_eeg2.read import image_ids, load_subject, read_images, stimulus_ids
from gradbrain.data.things_eeg2.write import write_image, write_image_metadata, write_split

REPS = {"train": 4, "test": 5}
FILES = {
    "train": ["zebra_01b.jpg", "zebra_02s.jpg", "aardvark_01b.jpg", "aardvark_02s.jpg", "coat_rack_01b.jpg"],
    "test": ["bean_13s.jpg", "axe_14s.jpg"],
}
CONCEPTS = {
    "train": ["00003_zebra", "00003_zebra", "00001_aardvark", "00001_aardvark", "00002_coat_rack"],
    "test": ["00005_bean", "00004_axe"],
}


def signature(name: str) -> np.ndarray:
    """A (channels, times) pattern that only this image file evokes, so that a wrong order cannot pass."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return rng.normal(size=(len(CHANNELS), EPOCHS.n_times))


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, Path]:
    """Two participants' files and an image set, written in the released layout (metadata deliberately unsorted)."""
    root, images = tmp_path / "eeg", tmp_path / "image_set"
    write_image_metadata(images, FILES, CONCEPTS)
    rng = np.random.default_rng(0)
    for subject in (1, 2):
        for split, files in FILES.items():
            data = np.stack([signature(f) for f in files])[:, None] + rng.normal(
                scale=0.5, size=(len(files), REPS[split], len(CHANNELS), EPOCHS.n_times)
            )
            write_split(root, subject, split, data * subject)
    return root, images


def authors_reading(root: Path, images: Path, subject: int, split: str) -> dict[str, np.ndarray]:
    """The release read as the authors' scripts read it: image path -> repetition-averaged (channels, times)."""
    part = {"train": "training", "test": "test"}[split]
    meta = np.load(images / "image_metadata.npy", allow_pickle=True).item()
    eeg = np.load(root / f"sub-{subject:02d}" / f"preprocessed_eeg_{part}.npy", allow_pickle=True).item()[
        "preprocessed_eeg_data"
    ]
    folder = {"train": "training_images", "test": "test_images"}[split]
    names = [
        f"{folder}/{c}/{f}" for c, f in zip(meta[f"{split}_img_concepts"], meta[f"{split}_img_files"], strict=True)
    ]
    return {n: eeg[i].mean(axis=0) for i, n in enumerate(names)}


def test_written_files_follow_the_released_layout(release):
    root, images = release
    content = np.load(eeg_path(root, 1, "train"), allow_pickle=True).item()
    assert set(content) == {"preprocessed_eeg_data", "ch_names", "times"}
    assert content["preprocessed_eeg_data"].shape == (5, 4, 17, 100)
    assert content["ch_names"][:3] == ["Pz", "P3", "P7"] and len(content["ch_names"]) == 17
    assert content["times"][0] == pytest.approx(-0.2) and content["times"][-1] == pytest.approx(0.79)
    meta = np.load(metadata_path(images), allow_pickle=True).item()
    assert {"train_img_files", "test_img_concepts", "train_img_concepts_THINGS"} <= set(meta)


@pytest.mark.parametrize("subject", [1, 2])
def test_order_and_splits_match_the_authors_reading(release, subject):
    root, images = release
    got = load_subject(root, images, subject, lowpass=None, sfreq=None, zscore=False)
    for split, Y, ids in (("train", got.Y, got.stimulus_ids), ("test", got.test_Y, got.test_ids)):
        expected = authors_reading(root, images, subject, split)
        assert sorted(ids) == sorted(expected)
        for y, sid in zip(Y, ids, strict=True):
            np.testing.assert_allclose(y, expected[sid], rtol=1e-5, atol=1e-5)
            name = sid.rsplit("/", 1)[1]
            assert np.corrcoef(y.ravel(), signature(name).ravel())[0, 1] > 0.9
    assert not set(got.stimulus_ids) & set(got.test_ids)
    assert got.ch_names == list(CHANNELS)
    np.testing.assert_allclose(got.times, EPOCHS.times, atol=1e-9)


def test_zscore_uses_every_single_repetition(release):
    root, images = release
    got = load_subject(root, images, 1, lowpass=None, sfreq=None, zscore=True)
    trials = [
        np.load(eeg_path(root, 1, s), allow_pickle=True).item()["preprocessed_eeg_data"] for s in ("train", "test")
    ]
    single = np.concatenate([t.reshape(-1, *t.shape[2:]) for t in trials])
    mean, sd = single.mean(axis=0), single.std(axis=0)
    np.testing.assert_allclose(got.Y, (trials[0].mean(axis=1) - mean) / sd, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got.test_Y, (trials[1].mean(axis=1) - mean) / sd, rtol=1e-4, atol=1e-4)


def test_resampling_and_crop(release):
    root, images = release
    got = load_subject(root, images, 1, lowpass=20.0, sfreq=50.0, tmin=0.0, tmax=0.5, zscore=False)
    assert got.Y.shape == (5, 17, len(got.times))
    assert got.times[0] == pytest.approx(0.0, abs=1e-6) and got.times[-1] == pytest.approx(0.5, abs=1e-6)
    np.testing.assert_allclose(np.diff(got.times), 0.02)


def test_prepare_writes_the_brain_store(release, tmp_path):
    root, images = release
    dataset = {
        "format": "things_eeg2",
        "modality": "meg",
        "root": str(root),
        "images_root": str(images),
        "heldout": "test",
        "preprocessing": {"lowpass": None, "sfreq": None, "zscore": False},
    }
    out = prepare.prepare_meg(dataset, 2, tmp_path / "sub-2.zarr")
    group = store.open_group(out)
    Y, split = store.read_array(group, "Y"), store.read_array(group, "split")
    ids = store.read_array(group, "stimulus_id")
    assert Y.shape == (7, 100 * 17) and list(split).count("test") == 2
    expected = authors_reading(root, images, 2, "test")
    row = list(ids).index("test_images/00004_axe/axe_14s.jpg")
    np.testing.assert_allclose(Y[row].reshape(100, 17), expected[ids[row]].T, rtol=1e-5, atol=1e-5)
    assert group.attrs["format"] == "things_eeg2" and group.attrs["n_channels"] == 17
    assert set(prepare.dataset_stimulus_ids(dataset)) == set(ids)
    assert prepare.concept_names(dataset, ids) == ["aardvark", "axe", "bean", "coat_rack", "zebra"]


def test_images_roundtrip(release):
    _, images = release
    ids = image_ids(images)
    assert list(ids["test"]) == ["test_images/00005_bean/bean_13s.jpg", "test_images/00004_axe/axe_14s.jpg"]
    assert len(stimulus_ids(images)) == 7
    img = np.random.default_rng(0).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    write_image(images, ids["train"][0], img)
    assert read_images(images, ids["train"][:1]).shape == (1, 12, 10, 3)
    assert read_images(images, ids["train"][:1], size=8).shape == (1, 8, 8, 3)
    with pytest.raises(FileNotFoundError, match="zebra_02s.jpg"):
        read_images(images, ids["train"][1:2])


def test_errors_name_the_file(release, tmp_path):
    root, images = release
    eeg_path(root, 2, "test").unlink()
    with pytest.raises(FileNotFoundError, match=r"sub-02/preprocessed_eeg_test\.npy.*osf"):
        load_subject(root, images, 2)
    with pytest.raises(FileNotFoundError, match="image_metadata.npy"):
        load_subject(root, tmp_path / "nowhere", 1)
    write_split(root, 1, "test", np.zeros((3, 2, 17, 100)))
    with pytest.raises(ValueError, match=r"has 3 image conditions but .*image_metadata\.npy lists 2 test images"):
        load_subject(root, images, 1)
    eeg_path(root, 1, "train").write_bytes(b"\x93NUMPY truncated")
    with pytest.raises(OSError, match="truncated or corrupt"):
        load_subject(root, images, 1)
