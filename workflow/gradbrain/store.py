"""Zarr I/O shared by every stage: string arrays, atomic group writes, reading groups back as dicts.

Every chunk is written, even one that holds only the fill value (zarr skips those by default), so that a chunk file
missing from a store is a lost chunk: :func:`open_group` refuses such a store rather than let zarr read the chunk
as its fill value (zeros).
"""

from __future__ import annotations

import itertools
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.dtype import VariableLengthUTF8

warnings.filterwarnings("ignore", category=zarr.errors.UnstableSpecificationWarning)
# Snakemake leaves a time stamp file in every directory output; listing a store's members meets it
warnings.filterwarnings("ignore", message=r"Object at \.snakemake_timestamp is not recognized")


class IncompleteStoreError(OSError):
    """A zarr store lacks chunk files of its arrays' grids."""


def create_array(group: zarr.Group, name: str, **kwargs: Any) -> zarr.Array:
    """``group.create_array`` that writes every chunk, also one of the fill value alone (see the module)."""
    return group.create_array(name, config={"write_empty_chunks": True}, **kwargs)


def write_array(group: zarr.Group, name: str, data: np.ndarray, chunks: tuple | None = None) -> zarr.Array:
    """Write ``data`` as ``group[name]``; unicode arrays are stored as variable-length UTF-8."""
    data = np.asarray(data)
    if data.dtype.kind in "USO":
        arr = create_array(group, name, shape=data.shape, dtype=VariableLengthUTF8(), overwrite=True)
        arr[...] = data.astype(str)
        return arr
    arr = create_array(group, name, shape=data.shape, dtype=data.dtype, chunks=chunks or "auto", overwrite=True)
    arr[...] = data
    return arr


def read_array(group: zarr.Group, name: str) -> np.ndarray:
    """Read ``group[name]`` into memory (strings as a numpy unicode array)."""
    values = group[name][...]
    if values.dtype == object or values.dtype.kind == "T":
        return np.array([str(v) for v in values.ravel()]).reshape(values.shape)
    return np.asarray(values)


@contextmanager
def atomic_group(path: str | os.PathLike) -> Iterator[zarr.Group]:
    """Open a group at ``<path>.tmp``, yield it, and move it to ``path`` only if the block succeeds.

    A failure leaves no partial output behind, as the design asks.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield zarr.open_group(str(tmp), mode="w")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)


def write_table(frame: Any, path: str | os.PathLike) -> Path:
    """Write a pandas table as CSV (6 significant digits) through ``.<name>.tmp``, so no partial file is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False, float_format="%.6g")
    tmp.rename(path)
    return path


def open_group(path: str | os.PathLike | Any, mode: str = "r") -> zarr.Group:
    """Open a zarr group, with an error naming the file and the rule that makes it when it is missing.

    An object that is not a path (an open group, or an in-memory stand-in such as ``power.MemoryGroup``) is
    returned as it is.
    """
    if not isinstance(path, (str, os.PathLike)):
        return path
    if mode == "r" and not Path(path).exists():
        raise FileNotFoundError(f"{path} does not exist: run the workflow stage that writes it (snakemake {path})")
    group = zarr.open_group(str(path), mode=mode)
    if mode == "r":
        check_chunks(group, path)
    return group


def missing_chunks(group: zarr.Group, root: str | os.PathLike) -> dict[str, tuple[int, list[str]]]:
    """Per array of ``group`` (its path in the store at ``root``) that lacks chunk files: the size of its chunk grid
    and the keys of the missing chunks. Costs one listing of the store's keys per array, no chunk is read."""
    out = {}
    for _, arr in group.members(max_depth=None):
        if not isinstance(arr, zarr.Array) or arr.nchunks_initialized == arr.nchunks:
            continue
        keys = (arr.metadata.encode_chunk_key(c) for c in itertools.product(*map(range, arr.cdata_shape)))
        out[arr.path] = (arr.nchunks, [k for k in keys if not (Path(root) / arr.path / k).exists()])
    return out


def check_chunks(group: zarr.Group, root: str | os.PathLike, shown: int = 3) -> None:
    """Stop when an array of the store at ``root`` lacks chunk files, naming the store, the arrays, the chunks and
    what to do (a partial copy, a deleted file: zarr would read the chunk as its fill value without a word)."""
    missing = missing_chunks(group, root)
    if not missing:
        return
    lines = [
        f"{root}: array '{name}' lacks {len(keys)} of its {total} chunks ({', '.join(keys[:shown])}"
        f"{', ...' if len(keys) > shown else ''})"
        for name, (total, keys) in missing.items()
    ]
    raise IncompleteStoreError(
        "\n".join(lines) + f"\nThe store is incomplete and cannot be read: delete it (rm -r {root}), make it again "
        f"(snakemake --cores all {root}) and run the workflow as before, which then re-runs the jobs that read it."
    )


def attrs(group: zarr.Group) -> dict[str, Any]:
    """The group's attributes as a plain dict."""
    return dict(group.attrs)
