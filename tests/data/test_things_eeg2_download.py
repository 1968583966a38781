"""THINGS-EEG2's download: OSF files found by name and MD5-checked, the archives unpacked where the reader looks, and
the overlay's dry run planning every participant's download, preparation and encodings."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import urllib.parse
import zipfile

import numpy as np
import pytest
from helpers import REPO, realdata

from gradbrain.data.download import files as dl
from gradbrain.data.download import things_eeg2, transfer
from gradbrain.data.things_eeg2.layout import PARTICIPANTS, eeg_path
from gradbrain.data.things_eeg2.read import load_subject
from gradbrain.data.things_eeg2.write import write_image_metadata, write_split


@pytest.fixture
def osf(monkeypatch, http_server):
    """A server on loopback standing in for OSF's API and storage; ``publish(node, name, data, md5)``."""
    server = http_server
    monkeypatch.setenv(things_eeg2.OSF_API_ENV, server.base)

    def publish(node: str, name: str, data: bytes, md5: str | None = None) -> None:
        query = urllib.parse.urlencode({"filter[name]": name})
        server.files[f"/storage/{node}/{name}"] = data
        entry = {
            "attributes": {
                "name": name,
                "size": len(data),
                "extra": {"hashes": {"md5": md5 or hashlib.md5(data).hexdigest()}},
            },
            "links": {"download": f"{server.base}/redirect/storage/{node}/{name}"},
        }
        server.files[f"/v2/nodes/{node}/files/osfstorage/?{query}"] = json.dumps({"data": [entry]}).encode()

    server.publish = publish
    return server


def test_download_checks_size_and_md5(osf, tmp_path):
    data = realdata.random_bytes(50_000, seed=3)
    osf.publish("anp5v", "sub-01.zip", data)
    dest = things_eeg2.download_osf("anp5v", "sub-01.zip", tmp_path / "sub-01.zip")
    assert dest.read_bytes() == data
    osf.publish("anp5v", "sub-02.zip", data, md5="0" * 32)
    with pytest.raises(transfer.CorruptDownload, match="MD5 .* OSF states 0{32}"):
        things_eeg2.download_osf("anp5v", "sub-02.zip", tmp_path / "sub-02.zip")
    assert not (tmp_path / "sub-02.zip").exists()
    with pytest.raises(FileNotFoundError, match="sub-03.zip is not in OSF project anp5v"):
        osf.files["/v2/nodes/anp5v/files/osfstorage/?filter%5Bname%5D=sub-03.zip"] = b'{"data": []}'
        things_eeg2.download_osf("anp5v", "sub-03.zip", tmp_path / "sub-03.zip")


def test_unpacked_archives_are_read_by_the_reader(tmp_path):
    staging, root, images = tmp_path / "staging", tmp_path / "eeg", tmp_path / "images"
    files = {"train": ["a_01b.jpg", "b_01b.jpg"], "test": ["c_01s.jpg"]}
    concepts = {"train": ["00001_a", "00002_b"], "test": ["00003_c"]}
    write_image_metadata(images, files, concepts)
    rng = np.random.default_rng(0)
    write_split(staging, 4, "train", rng.normal(size=(2, 4, 17, 100)))
    write_split(staging, 4, "test", rng.normal(size=(1, 80, 17, 100)))
    with zipfile.ZipFile(tmp_path / "sub-04.zip", "w") as zf:
        for split in ("train", "test"):
            path = eeg_path(staging, 4, split)
            zf.write(path, f"sub-04/{path.name}")
        zf.writestr("__MACOSX/sub-04/._notes.txt", "x")
    things_eeg2.unpack_subject(tmp_path / "sub-04.zip", root / "sub-04")
    assert sorted(p.name for p in (root / "sub-04").iterdir()) == [
        "preprocessed_eeg_test.npy",
        "preprocessed_eeg_training.npy",
    ]
    with zipfile.ZipFile(tmp_path / "training_images.zip", "w") as zf:
        for c, f in zip(concepts["train"], files["train"], strict=True):
            zf.writestr(f"training_images/{c}/{f}", b"jpeg")
    things_eeg2.unpack_images(tmp_path / "training_images.zip", images / "training_images")
    assert (images / "training_images" / "00002_b" / "b_01b.jpg").read_bytes() == b"jpeg"
    got = load_subject(root, images, 4, lowpass=None, sfreq=None, zscore=False)
    assert got.Y.shape == (2, 17, 100) and got.test_Y.shape == (1, 17, 100)
    with zipfile.ZipFile(tmp_path / "sub-05.zip", "w") as zf:
        zf.writestr("sub-05/preprocessed_eeg_training.npy", b"")
    with pytest.raises(ValueError, match=r"lacks \['preprocessed_eeg_test.npy'\]"):
        things_eeg2.unpack_subject(tmp_path / "sub-05.zip", root / "sub-05")
    assert not (root / "sub-05").exists()


def test_overlay_dry_run_plans_ten_participants():
    """The paper's study with the THINGS-EEG2 overlay plans, without data, each participant's archive, its unpacking,
    its preparation and its encodings (one per model, as for THINGS-MEG)."""
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
            str(REPO / "config" / "overlays" / "things_eeg2.yaml"),
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
    counts = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M)}
    n = len(PARTICIPANTS)
    assert n == 10
    assert counts["download_things_eeg2"] == n + 2  # sub-XX.zip, training_images.zip, test_images.zip
    assert counts["download_things_eeg2_metadata"] == 1 and counts["unpack_things_eeg2_images"] == 2
    assert counts["unpack_things_eeg2"] == n
    assert counts["prepare_meg"] == 4 + n
    models = counts["extract_features"] // 3
    assert counts["encode_meg"] == (4 + n) * models
    assert re.search(r"things_eeg2/sub-10\.zarr", proc.stdout)
    assert dl.things_eeg2_node("sub-10.zip") == "anp5v" and dl.things_eeg2_node("test_images.zip") == "y63gw"


def test_local_root_checks_name_the_missing_file(tmp_path):
    root, images = tmp_path / "eeg", tmp_path / "images"
    write_image_metadata(images, {"train": ["a_01b.jpg"], "test": ["c_01s.jpg"]}, {"train": ["1_a"], "test": ["3_c"]})
    write_split(root, 1, "train", np.zeros((1, 4, 17, 100)))
    ds = {"format": "things_eeg2", "modality": "meg", "root": str(root), "images_root": str(images), "subjects": [1]}
    dl.check_roots({"eeg2": ds})
    with pytest.raises(FileNotFoundError, match=r"datasets.eeg2: .*sub-01/preprocessed_eeg_test.npy is missing"):
        dl.check_local_files({"eeg2": ds})
    write_split(root, 1, "test", np.zeros((1, 80, 17, 100)))
    with pytest.raises(FileNotFoundError, match=r"no image in .*test_images/<NNNNN_concept>/ \(unpack test_images.zip"):
        dl.check_local_files({"eeg2": ds})
    for folder, concept, file in (("training_images", "1_a", "a_01b.jpg"), ("test_images", "3_c", "c_01s.jpg")):
        (images / folder / concept).mkdir(parents=True)
        (images / folder / concept / file).write_bytes(b"jpeg")
    dl.check_local_files({"eeg2": ds})
    assert f"{images}/test_images/3_c/c_01s.jpg" in dl.local_files(ds)
    with pytest.raises(ValueError, match=r"datasets.eeg2.subjects: THINGS-EEG2 participants are 1..10, got 11"):
        dl.check_subjects({"eeg2": {**ds, "subjects": [1, 11]}}, {})
    with pytest.raises(FileNotFoundError, match=r"datasets.eeg2.images_root: .* does not exist"):
        dl.check_roots({"eeg2": {**ds, "images_root": str(tmp_path / "none")}})
