"""Parallel image decoding (DataLoader workers) yields the same images in the same order as the serial reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradbrain.data import prepare
from gradbrain.data.nsd.write import write_image_brick
from gradbrain.data.things_meg.write import write_image
from gradbrain.features.loader import image_loader
from gradbrain.features.preprocess import preprocess
from gradbrain.models.model import Preprocessing

PREP = Preprocessing(input_size=24, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), crop_pct=0.875)


def _images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 255, size=(n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("stimuli")
    brick = _images(40, 30)
    write_image_brick(root / "nsd", brick)
    things_ids = [f"concept{c}/concept{c}_{k:02d}s.jpg" for c in range(5) for k in range(5)]
    for i, sid in enumerate(things_ids):
        write_image(root / "things", sid, _images(1, 28 + i % 3, seed=i)[0])
    nsd_ids = prepare.nsd_stimulus_id([3, 4, 5, 17, 2, 39, 0, 8, 9, 10, 11, 30, 31, 1, 12, 13, 14])
    return {
        "nsd": ({"format": "nsd", "root": str(root / "nsd")}, list(nsd_ids), brick),
        "things": ({"format": "things_meg", "images_root": str(root / "things"), "image_size": 32}, things_ids, None),
    }


def _batches(loader):
    return [(x.clone(), idx.clone()) for x, idx in loader]


@pytest.mark.parametrize("name", ["nsd", "things"])
@pytest.mark.parametrize("decode_only", [True, False])
def test_parallel_loader_equals_serial_reader(datasets, name, decode_only):
    dataset, ids, _ = datasets[name]
    read = prepare.image_reader(dataset)
    serial = _batches(image_loader(read, ids, PREP, 4, num_workers=0, decode_only=decode_only))
    parallel = _batches(image_loader(read, ids, PREP, 4, num_workers=2, decode_only=decode_only))
    assert len(serial) == len(parallel) == -(-len(ids) // 4)
    for (xs, i_s), (xp, i_p) in zip(serial, parallel, strict=True):
        assert torch.equal(i_s, i_p) and torch.equal(xs, xp)
    order = torch.cat([i for _, i in parallel])
    assert order.tolist() == list(range(len(ids)))
    direct = read(ids)  # the reader called once, in this process
    if decode_only:
        assert parallel[0][0].dtype == torch.uint8
        np.testing.assert_array_equal(torch.cat([x for x, _ in parallel]).numpy(), direct)
    else:
        torch.testing.assert_close(torch.cat([x for x, _ in parallel]), preprocess(direct, PREP))


def test_nsd_reader_gives_the_brick_rows_and_opens_per_process(datasets):
    dataset, ids, brick = datasets["nsd"]
    read = prepare.image_reader(dataset)
    batches = _batches(image_loader(read, ids, PREP, 5, num_workers=2, decode_only=True))
    assert read.brick._file is None, "the main process never opened the file; the workers did"
    rows = prepare.parse_nsd_stimulus_id(ids)
    np.testing.assert_array_equal(torch.cat([x for x, _ in batches]).numpy(), brick[rows])
    np.testing.assert_array_equal(read([ids[3], ids[0], ids[3]]), brick[[rows[3], rows[0], rows[3]]])  # repeats
    assert read.brick._file is not None
    read.brick.close()


def test_device_preprocessing_equals_worker_preprocessing(datasets):
    """uint8 batches preprocessed by the model's device path give the floats the CPU workers give."""
    dataset, ids, _ = datasets["nsd"]
    read = prepare.image_reader(dataset)
    u8 = _batches(image_loader(read, ids, PREP, 6, decode_only=True))
    fl = _batches(image_loader(read, ids, PREP, 6, decode_only=False))
    for (a, _), (b, _) in zip(u8, fl, strict=True):
        torch.testing.assert_close(preprocess(a, PREP), b, rtol=0, atol=0)
