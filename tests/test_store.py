"""gradbrain.store: a store that lost a chunk is refused when read, naming the store, the array and what to do."""

from __future__ import annotations

import numpy as np
import pytest

from gradbrain import store


def _write(path):
    with store.atomic_group(path) as group:
        store.write_array(group, "gradients/block03", np.arange(40, dtype=np.float32).reshape(10, 4), chunks=(3, 4))
        store.write_array(group, "zeros", np.zeros((10, 4), np.float32), chunks=(3, 4))  # every chunk its fill value
        store.write_array(group, "split", np.array(["train"] * 5))
        group.attrs["kinds"] = ["gradients"]


def test_a_complete_store_reads_back_with_chunks_of_the_fill_value(tmp_path):
    path = tmp_path / "features.zarr"
    _write(path)
    group = store.open_group(path)
    np.testing.assert_array_equal(store.read_array(group, "zeros"), np.zeros((10, 4)))
    assert len(list((path / "zeros" / "c").rglob("*"))) >= 4, "chunks of the fill value are written too"


def test_a_missing_chunk_stops_the_read(tmp_path):
    """Before: zarr read the lost chunk as its fill value, zeros, and the encoding went on without a word."""
    path = tmp_path / "features.zarr"
    _write(path)
    (path / "gradients" / "block03" / "c" / "1" / "0").unlink()
    with pytest.raises(store.IncompleteStoreError) as err:
        store.open_group(path)
    message = str(err.value)
    assert f"{path}: array 'gradients/block03' lacks 1 of its 4 chunks (c/1/0)" in message
    assert f"rm -r {path}" in message and "snakemake" in message


def test_a_missing_chunk_of_the_fill_value_is_caught_too(tmp_path):
    path = tmp_path / "brain.zarr"
    _write(path)
    (path / "zeros" / "c" / "3" / "0").unlink()
    with pytest.raises(store.IncompleteStoreError, match="array 'zeros' lacks 1 of its 4 chunks"):
        store.open_group(path)
