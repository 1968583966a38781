"""gradbrain.data.download.transfer against moto's S3 server on loopback, standing in for NSD's and OpenNeuro's buckets.

Fixture files lie in the real bucket layouts (docs/data-formats.md 1.2, 2.2). The tests exercise a complete download,
resumption of a truncated ``.part`` and of a broken connection, a missing key, and the MD5 that an object's ETag
states: a corrupted transfer or ``.part`` fails it, a multipart object is checked by size only.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest
from botocore.exceptions import ResponseStreamingError
from helpers import realdata

from gradbrain.data.download import files as dl
from gradbrain.data.download import transfer


@pytest.fixture(scope="module")
def s3():
    moto = realdata.start_moto()
    yield moto
    moto.server.stop()


def record(client, operation: str) -> list[dict]:
    """Headers of every request of one operation that ``client`` sends."""
    sent: list[dict] = []

    def keep(request, **_):
        sent.append({k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})

    client.meta.events.register(f"before-send.s3.{operation}", keep)
    return sent


KEY = "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session01.nii.gz"


# ------------------------------------------------------------------------------------------------------------ S3
def test_complete_download_then_skip(s3, tmp_path):
    data = realdata.random_bytes(1_500_000)
    realdata.publish(s3.admin, dl.NSD_BUCKET, KEY, data)
    client = transfer.s3_client(s3.url)
    gets = record(client, "GetObject")
    dest = tmp_path / "nsd" / KEY
    messages: list[str] = []
    assert transfer.download_object(client, dl.NSD_BUCKET, KEY, dest, chunk_size=256 << 10, log=messages.append) == dest
    assert dest.read_bytes() == data and not dest.with_name(dest.name + ".part").exists()
    assert len(gets) == 1 and "Range" not in gets[0]
    assert "Authorization" not in gets[0], "requests must be anonymous"
    transfer.download_object(client, dl.NSD_BUCKET, KEY, dest, log=messages.append)
    assert len(gets) == 1 and "skipped" in messages[-1]


def test_truncated_part_resumes_with_a_range_request(s3, tmp_path):
    data = realdata.random_bytes(1_000_000, seed=1)
    key = "ds004212/derivatives/preprocessed/preprocessed_P1-epo-2.fif"
    realdata.publish(s3.admin, dl.OPENNEURO_BUCKET, key, data)
    dest = tmp_path / "preprocessed_P1-epo-2.fif"
    dest.with_name(dest.name + ".part").write_bytes(data[:300_001])
    client = transfer.s3_client(s3.url)
    gets = record(client, "GetObject")
    messages: list[str] = []
    transfer.download_object(client, dl.OPENNEURO_BUCKET, key, dest, log=messages.append)
    assert dest.read_bytes() == data
    assert [g.get("Range") for g in gets] == ["bytes=300001-"]
    assert any("resuming" in m and "300001" in m for m in messages)


def test_complete_part_is_renamed_without_a_transfer(s3, tmp_path):
    data = realdata.random_bytes(4096, seed=2)
    realdata.publish(s3.admin, dl.NSD_BUCKET, "nsddata/experiments/nsd/nsd_expdesign.mat", data)
    dest = tmp_path / "nsd_expdesign.mat"
    dest.with_name(dest.name + ".part").write_bytes(data)
    client = transfer.s3_client(s3.url)
    gets = record(client, "GetObject")
    transfer.download_object(client, dl.NSD_BUCKET, "nsddata/experiments/nsd/nsd_expdesign.mat", dest)
    assert dest.read_bytes() == data and not gets


def test_empty_object(s3, tmp_path):
    realdata.publish(s3.admin, dl.NSD_BUCKET, "nsddata/empty.txt", b"")
    dest = transfer.download_object(
        transfer.s3_client(s3.url), dl.NSD_BUCKET, "nsddata/empty.txt", tmp_path / "empty.txt"
    )
    assert dest.is_file() and dest.stat().st_size == 0


def test_part_longer_than_the_object_restarts(s3, tmp_path):
    data = realdata.random_bytes(50_000, seed=3)
    realdata.publish(s3.admin, dl.NSD_BUCKET, "nsddata/x/ncsnr.nii.gz", data)
    dest = tmp_path / "ncsnr.nii.gz"
    dest.with_name(dest.name + ".part").write_bytes(realdata.random_bytes(80_000, seed=4))
    dest.write_bytes(b"stale, wrong size")
    transfer.download_object(transfer.s3_client(s3.url), dl.NSD_BUCKET, "nsddata/x/ncsnr.nii.gz", dest)
    assert dest.read_bytes() == data


class BreakOnce:
    """A client whose first GetObject body breaks after one chunk, as a dropped connection does."""

    def __init__(self, client):
        self.client, self.broken = client, False

    def head_object(self, **kwargs):
        return self.client.head_object(**kwargs)

    def get_object(self, **kwargs):
        response = self.client.get_object(**kwargs)
        if not self.broken:
            self.broken = True
            body = response["Body"]

            def chunks(size):
                yield next(body.iter_chunks(size))
                raise ResponseStreamingError(error="connection reset by peer")

            response["Body"] = SimpleNamespace(iter_chunks=chunks)
        return response


def test_broken_connection_resumes_from_the_bytes_received(s3, tmp_path, monkeypatch):
    monkeypatch.setattr(transfer.time, "sleep", lambda s: None)
    data = realdata.random_bytes(700_000, seed=5)
    realdata.publish(s3.admin, dl.NSD_BUCKET, KEY, data)
    client = transfer.s3_client(s3.url)
    gets = record(client, "GetObject")
    dest = tmp_path / "betas.nii.gz"
    messages: list[str] = []
    transfer.download_object(BreakOnce(client), dl.NSD_BUCKET, KEY, dest, chunk_size=100_000, log=messages.append)
    assert dest.read_bytes() == data
    assert [g.get("Range") for g in gets] == [None, "bytes=100000-"]
    assert any("interrupted" in m for m in messages)


class FlipOneByte(BreakOnce):
    """A client whose GetObject bodies arrive with one byte changed, as a faulty network or disk would deliver them."""

    def get_object(self, **kwargs):
        response = self.client.get_object(**kwargs)
        body = response["Body"]

        def chunks(size):
            for k, chunk in enumerate(body.iter_chunks(size)):
                yield bytes([chunk[0] ^ 0xFF]) + chunk[1:] if k == 1 else chunk

        response["Body"] = SimpleNamespace(iter_chunks=chunks)
        return response


def test_corrupted_download_fails_the_etag_md5(s3, tmp_path):
    data = realdata.random_bytes(300_000, seed=6)
    realdata.publish(s3.admin, dl.NSD_BUCKET, KEY, data)
    client = transfer.s3_client(s3.url)
    assert transfer.etag_md5(client.head_object(Bucket=dl.NSD_BUCKET, Key=KEY)["ETag"]) == hashlib.md5(data).hexdigest()
    dest = tmp_path / "betas.nii.gz"
    with pytest.raises(transfer.CorruptDownload, match="run the workflow again") as err:
        transfer.download_object(FlipOneByte(client), dl.NSD_BUCKET, KEY, dest, chunk_size=100_000)
    assert hashlib.md5(data).hexdigest() in str(err.value) and KEY in str(err.value)
    assert not list(tmp_path.iterdir()), "neither the file nor its corrupt .part is kept"


def test_corrupt_part_of_an_earlier_run_is_caught_then_replaced(s3, tmp_path):
    data = realdata.random_bytes(200_000, seed=7)
    realdata.publish(s3.admin, dl.NSD_BUCKET, KEY, data)
    dest = tmp_path / "betas.nii.gz"
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(realdata.random_bytes(80_000, seed=8))  # the right length of a prefix, the wrong bytes
    client = transfer.s3_client(s3.url)
    with pytest.raises(transfer.CorruptDownload):
        transfer.download_object(client, dl.NSD_BUCKET, KEY, dest)
    assert not part.exists() and not dest.exists()
    transfer.download_object(client, dl.NSD_BUCKET, KEY, dest)  # the next run starts afresh
    assert dest.read_bytes() == data


def test_multipart_object_is_checked_by_size(s3, tmp_path):
    data = realdata.random_bytes(5 * transfer.MiB + 1000, seed=9)
    key = "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"
    realdata.publish(s3.admin, dl.NSD_BUCKET, "nsddata/placeholder", b"")  # the bucket and its public policy
    upload = s3.admin.create_multipart_upload(Bucket=dl.NSD_BUCKET, Key=key)["UploadId"]
    parts = [
        {"PartNumber": n, "ETag": s3.admin.upload_part(
            Bucket=dl.NSD_BUCKET, Key=key, UploadId=upload, PartNumber=n, Body=chunk
        )["ETag"]}
        for n, chunk in ((1, data[: 5 * transfer.MiB]), (2, data[5 * transfer.MiB :]))
    ]  # fmt: skip
    s3.admin.complete_multipart_upload(Bucket=dl.NSD_BUCKET, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    client = transfer.s3_client(s3.url)
    assert transfer.etag_md5(client.head_object(Bucket=dl.NSD_BUCKET, Key=key)["ETag"]) is None
    messages: list[str] = []
    dest = transfer.download_object(client, dl.NSD_BUCKET, key, tmp_path / "brick.hdf5", log=messages.append)
    assert dest.read_bytes() == data and any("checked by size only" in m for m in messages)


def test_missing_key_names_key_and_bucket(s3, tmp_path):
    realdata.publish(s3.admin, dl.NSD_BUCKET, KEY, b"x")
    key = "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session41.nii.gz"
    dest = tmp_path / "betas_session41.nii.gz"
    with pytest.raises(transfer.MissingObjectError) as err:
        transfer.download_object(transfer.s3_client(s3.url), dl.NSD_BUCKET, key, dest)
    assert key in str(err.value) and dl.NSD_BUCKET in str(err.value) and "sessions" in str(err.value)
    assert not list(tmp_path.iterdir()), "a failed download leaves no file behind"


def test_endpoint_from_the_aws_environment(s3, monkeypatch):
    realdata.publish(s3.admin, dl.NSD_BUCKET, KEY, b"12345")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.url)
    assert transfer.remote_size(transfer.s3_client(), dl.NSD_BUCKET, KEY) == 5
