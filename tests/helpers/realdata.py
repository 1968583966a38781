"""Tiny NSD and THINGS-MEG trees in the real layouts and formats, written by gradbrain's own writers.

Used by the download tests and the end-to-end runs of the real-data rules, which serve these trees from the
loopback servers defined here (moto's S3 server, and a Range-capable HTTP server standing in for OSF). The
layouts follow docs/data-formats.md (NSD 1.2-1.9, THINGS-MEG 2.2-2.4, THINGS images 3); sizes are
scaled down: a (6, 5, 4) voxel grid, 60 trials per session instead of 750, 16 MEG channels instead of 271.
"""

from __future__ import annotations

import http.server
import json
import logging
import re
import shutil
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import boto3
import numpy as np
from moto.server import ThreadedMotoServer

from gradbrain.data.nsd.write import (
    write_betas_session,
    write_expdesign,
    write_image_brick,
    write_ncsnr,
    write_roi,
    write_stim_info,
)
from gradbrain.data.things_meg.layout import channel_names, epochs_path, stimulus_id
from gradbrain.data.things_meg.write import metadata_frame, write_epochs, write_image
from helpers.nsd import AFFINE, GRID, VISUAL, hemispheres

STREAMS = {1: "early", 2: "midventral", 3: "midlateral", 4: "midparietal", 5: "ventral", 6: "lateral", 7: "parietal"}


def _labels(rng: np.random.Generator, n_labels: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A label volume (-1 on one outside edge, 0..n_labels inside) and its lh (i < 3) / rh halves."""
    vol = rng.integers(0, n_labels + 1, GRID)
    vol[:, 0, 0] = -1
    return vol, hemispheres(vol)


def build_nsd(
    root: Path,
    *,
    subjects: tuple[int, ...] = (1,),
    n_sessions: int = 2,
    planned_sessions: int | None = None,
    trials: int = 60,
    n_images: int = 80,
    n_shared: int = 6,
    image_size: int = 32,
    fmt: str = "nii.gz",
    seed: int = 0,
) -> dict:
    """An NSD tree: design, stimulus info, image brick, and per subject ROIs, ncsnr and betas of each session.

    The design plans ``planned_sessions`` (default one more than written, as real NSD plans 40 sessions and some
    subjects completed fewer): each subject's ``trials * planned_sessions / 3`` images are shown three times.
    """
    rng = np.random.default_rng(seed)
    planned = planned_sessions or n_sessions + 1
    per_subject = trials * planned // 3
    shared = rng.choice(n_images, n_shared, replace=False)
    pool = np.setdiff1d(np.arange(n_images), shared)
    subjectim = np.zeros((8, per_subject), dtype=int)
    for s in range(8):
        subjectim[s] = np.r_[np.sort(shared), rng.choice(pool, per_subject - n_shared, replace=False)] + 1
    masterordering = rng.permutation(np.repeat(np.arange(1, per_subject + 1), 3))
    write_expdesign(root, masterordering, subjectim, np.sort(shared) + 1)
    write_stim_info(
        root, subjectim, masterordering, {s: n_sessions for s in subjects}, n_images, trials_per_session=trials
    )
    images = rng.integers(0, 256, (n_images, image_size, image_size, 3), dtype=np.uint8)
    write_image_brick(root, images)
    for subject in subjects:
        for atlas, table in (("prf-visualrois", VISUAL), ("streams", STREAMS)):
            vol, halves = _labels(rng, len(table))
            write_roi(root, subject, atlas, vol, table, AFFINE, halves)
        write_ncsnr(root, subject, rng.uniform(0.1, 1.2, GRID), AFFINE)
        for session in range(1, n_sessions + 1):
            psc = rng.normal(0, 2, GRID + (trials,)) + rng.normal(0, 1, GRID + (1,))
            write_betas_session(root, subject, session, psc, AFFINE, fmt=fmt)
    return {"images": images, "subjectim": subjectim, "masterordering": masterordering}


def random_bytes(n: int, seed: int = 0) -> bytes:
    """``n`` reproducible random bytes: the content of a served file."""
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _meg_trials(n_concepts: int, n_exemplars: int, n_test: int, test_repeats: int, n_catch: int, seed: int):
    rng = np.random.default_rng(seed)
    concepts = [f"concept{c:02d}" for c in range(n_concepts)]
    rows = [
        ("exp", f"images_meg/{c}/{c}_{k:02d}{'b' if k == 1 else 'n'}.jpg")
        for c in concepts
        for k in range(1, n_exemplars + 1)
    ]
    rows += [("test", f"images_test_meg/{c}_{n_exemplars + 1:02d}s.jpg") for c in concepts[:n_test]] * test_repeats
    rows += [("catch", f"images_catch_meg/catch_{k:03d}.jpg") for k in range(n_catch)]
    order = rng.permutation(len(rows))
    types, paths = zip(*[rows[i] for i in order], strict=True)
    return list(types), list(paths)


def write_epochs_in_parts(root: Path, subject: int, data: np.ndarray, metadata, ch_names, parts: int) -> list[Path]:
    """Save epochs as exactly ``parts`` MNE split files, like the real -epo.fif, -epo-1.fif ... (4 per participant).

    MNE splits into ceil(size / (split_size - overhead)) parts and reports overhead + one epoch as its minimum
    split size; the search starts from there.
    """
    folder = epochs_path(root, subject).parent
    try:
        write_epochs(root, subject, data, metadata, ch_names, split_size=1024)
        raise RuntimeError("MNE accepted a 1 KiB split size; cannot derive its overhead")
    except ValueError as err:
        minimum = int(re.search(r"\((\d+) bytes\)", str(err)).group(1))
    per_epoch = np.asarray(data, np.float32)[0].nbytes  # MNE counts each epoch at its float32 size
    size = minimum + per_epoch * (-(-len(data) // parts) - 1)
    for _ in range(200):
        shutil.rmtree(folder, ignore_errors=True)
        write_epochs(root, subject, data, metadata, ch_names, split_size=size)
        files = sorted(folder.glob(f"preprocessed_P{subject}-epo*.fif"))
        if len(files) == parts:
            return files
        size += (1 if len(files) > parts else -1) * 4096
    raise RuntimeError(f"no split size gives {parts} files for these epochs; change the fixture's size")


def build_things_meg(
    root: Path,
    images_root: Path,
    *,
    subjects: tuple[int, ...] = (1,),
    n_channels: int = 16,
    n_concepts: int = 8,
    n_exemplars: int = 5,
    n_test: int = 4,
    test_repeats: int = 3,
    n_catch: int = 4,
    image_size: int = 32,
    parts: int = 4,
    seed: int = 0,
) -> dict:
    """THINGS-MEG epochs in ``parts`` split files per participant, and the THINGS images they show."""
    rng = np.random.default_rng(seed)
    out = {}
    for subject in subjects:
        types, paths = _meg_trials(n_concepts, n_exemplars, n_test, test_repeats, n_catch, seed + subject)
        md = metadata_frame(types, paths, session_nr=1, run_nr=1)
        data = rng.standard_normal((len(md), n_channels, 281)).astype(np.float32)
        out[subject] = write_epochs_in_parts(root, subject, data, md, channel_names(n_channels), parts)
    ids = sorted({stimulus_id(p) for p in paths} - {None})
    for sid in ids:
        write_image(images_root, sid, rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8))
    out["ids"] = ids
    return out


def zip_with_password(folder: Path, archive: Path, password: str) -> Path:
    """A ZipCrypto archive of ``folder`` made with Info-ZIP's ``zip -P`` (Python's zipfile cannot encrypt)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["zip", "-q", "-r", "-P", password, str(archive.resolve()), folder.name],
        cwd=folder.parent,
        check=True,
    )
    return archive


def publish(admin, bucket: str, key: str, data: bytes) -> None:
    """Put an object readable anonymously, in a bucket that lets anyone list it (as the public buckets do)."""
    existing = {b["Name"] for b in admin.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        admin.create_bucket(Bucket=bucket)
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["s3:GetObject", "s3:ListBucket"],
                    "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                }
            ],
        }
        admin.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    admin.put_object(Bucket=bucket, Key=key, Body=data, ACL="public-read")


def start_moto() -> SimpleNamespace:
    """moto's S3 server on a free loopback port, with a signed client (``admin``) that fills its buckets."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    admin = boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="fixture", aws_secret_access_key="fixture"
    )
    return SimpleNamespace(server=server, url=url, admin=admin)


def upload_tree(admin, folder: Path, bucket: str, prefix: str = "") -> list[str]:
    """Publish every file under ``folder`` at ``<prefix><path relative to folder>``; returns the keys."""
    keys = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = prefix + path.relative_to(folder).as_posix()
        publish(admin, bucket, key, path.read_bytes())
        keys.append(key)
    return keys


class RangeServer(http.server.ThreadingHTTPServer):
    """Serves ``files`` (path -> bytes) with Range support; ``ignore_range`` and ``cut_first`` model odd servers."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.files: dict[str, bytes] = {}
        self.ignore_range = False
        self.cut_first = 0
        self.requests: list[dict] = []
        self.base = f"http://127.0.0.1:{self.server_address[1]}"

    @classmethod
    def start(cls) -> RangeServer:
        server = cls()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server: RangeServer = self.server  # type: ignore[assignment]
        server.requests.append({"path": self.path, "Range": self.headers.get("Range")})
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect"))
            self.end_headers()
            return
        data = server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and not server.ignore_range:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_first:
            server.cut_first -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)
