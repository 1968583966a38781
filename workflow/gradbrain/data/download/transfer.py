"""Resumable, verified transfers: S3 objects (NSD, OpenNeuro) with boto3, and HTTP(S) files (OSF).

Bytes go to ``<file>.part``; an interrupted transfer resumes from the end of that file with a Range request, the size
is compared with the server's (S3 ``ContentLength`` of a HEAD request, or HTTP ``Content-Length`` /
``Content-Range``), and only a complete file is renamed to its final name. S3 objects (NSD, OpenNeuro) are also
checked against the MD5 that their ETag states; OSF's download sends no checksum, so the THINGS archive is checked
by size here and by the CRC-32 of every member when it is unpacked. A file already present with the right size is
skipped (docs/data-formats.md 4).

The S3 endpoint follows the standard AWS settings, so ``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``) points the
downloads at a mirror or at a local S3-compatible server (the tests use moto's).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

MiB = 1 << 20
Log = Callable[[str], object]


class MissingObjectError(FileNotFoundError):
    """The requested key is not in the bucket."""


class IncompleteDownload(OSError):
    """A transfer ended before the size announced by the server was reached."""


class CorruptDownload(OSError):
    """The bytes received do not have the MD5 that the object's ETag states."""


# ---------------------------------------------------------------------------------------------------------------
# S3


def s3_client(endpoint_url: str | None = None, retries: int = 10):
    """An anonymous (unsigned) boto3 S3 client; the endpoint comes from the argument or the AWS settings."""
    config = Config(signature_version=UNSIGNED, retries={"max_attempts": retries, "mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def _client_error(err: ClientError, bucket: str, key: str) -> OSError:
    code = str(err.response.get("Error", {}).get("Code", ""))
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    where = f"s3://{bucket}/{key}"
    if code in ("404", "NoSuchKey", "NotFound") or status == 404:
        return MissingObjectError(
            f"key {key!r} is not in bucket {bucket!r} ({where}). Check the config entries that choose it "
            "(subjects, sessions, space, beta_version, beta_format, rois), or the dataset's layout on the bucket"
        )
    if code in ("NoSuchBucket",):
        return MissingObjectError(f"bucket {bucket!r} does not exist (while fetching {where})")
    if code in ("403", "AccessDenied", "Forbidden") or status == 403:
        return PermissionError(
            f"access to {where} was refused (HTTP 403). The bucket is public; if the key is right, check the "
            "network or the AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL settings"
        )
    return OSError(f"request for {where} failed: {err}")


def _head(client, bucket: str, key: str) -> dict:
    try:
        return client.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        raise _client_error(err, bucket, key) from err


def remote_size(client, bucket: str, key: str) -> int:
    """Size in bytes of ``s3://bucket/key`` from a HEAD request; a missing key names the key and the bucket."""
    return int(_head(client, bucket, key)["ContentLength"])


def etag_md5(etag: str | None) -> str | None:
    """The MD5 (hex) that an S3 ETag states, or None when it states none.

    The ETag of an object uploaded in one part (and not encrypted with KMS) is the MD5 of its content. A multipart
    upload's ETag is ``<MD5 of the parts' binary MD5s>-<number of parts>``: it depends on the part size the uploader
    chose, which S3 does not publish, so such objects can be checked by size only.
    """
    value = (etag or "").strip('"').lower()
    return value if re.fullmatch(r"[0-9a-f]{32}", value) else None


class _RunningMD5:
    """MD5 of a ``.part`` file kept up to date as bytes are appended; re-read from disk when they disagree."""

    def __init__(self, part: Path):
        self.part, self.md5, self.hashed = part, hashlib.md5(), 0

    def start(self, have: int) -> None:
        """Before writing at byte ``have``: the hash must cover exactly the file's first ``have`` bytes."""
        if self.hashed == have:
            return
        self.md5, self.hashed = hashlib.md5(), 0
        if have == 0:
            return
        with open(self.part, "rb") as fh:
            while self.hashed < have and (block := fh.read(min(8 * MiB, have - self.hashed))):
                self.update(block)

    def update(self, chunk: bytes) -> None:
        self.md5.update(chunk)
        self.hashed += len(chunk)

    def hexdigest(self, size: int) -> str:
        self.start(size)
        return self.md5.hexdigest()


def _progress(label: str, total: int, log: Log, every_seconds: float = 10.0) -> Callable[[int], None]:
    state = {"last": 0.0, "t0": time.time()}

    def report(done: int) -> None:
        now = time.time()
        if done < total and now - state["last"] < every_seconds:
            return
        state["last"] = now
        rate = done / max(now - state["t0"], 1e-9) / MiB
        log(f"{label}: {done / MiB:.1f} / {total / MiB:.1f} MiB ({100 * done / max(total, 1):.0f} %, {rate:.1f} MiB/s)")

    return report


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _retry_or_give_up(source: str, err: Exception, attempt: int, attempts: int, part: Path, say: Log) -> None:
    """After an interrupted transfer: wait and return (the caller retries), or raise after the last attempt."""
    if attempt == attempts:
        raise IncompleteDownload(
            f"{source}: transfer failed {attempts} times ({err}); the bytes received are kept in {part}, "
            "run the workflow again to resume"
        ) from err
    say(f"{source}: transfer interrupted ({err}); retrying ({attempt}/{attempts})")
    time.sleep(min(2**attempt, 30))


def _finish(part: Path, dest: Path, size: int | None, source: str) -> Path:
    got = part.stat().st_size
    if size is not None and got != size:
        raise IncompleteDownload(
            f"{source}: received {got} of {size} bytes into {part}; run the workflow again to resume the transfer"
        )
    os.replace(part, dest)
    return dest


def download_object(
    client,
    bucket: str,
    key: str,
    dest: str | os.PathLike,
    *,
    chunk_size: int = 8 * MiB,
    attempts: int = 5,
    log: Log | None = None,
) -> Path:
    """Download ``s3://bucket/key`` to ``dest``, resuming ``dest.part``; skip a complete ``dest``; verify the MD5.

    The size of the object (HEAD) decides: a ``dest`` of that size is complete and skipped; a ``.part`` shorter
    than it is continued with a Range request (a longer one, or a server that ignores the range, restarts it); a
    broken connection resumes from the bytes received, up to ``attempts`` times. A complete ``.part`` must then
    have the MD5 that the object's ETag states (:func:`etag_md5`; the bytes resumed from an earlier run included):
    if not, it is deleted and :class:`CorruptDownload` raised. Multipart objects are checked by size only.
    """
    say = log or (lambda msg: None)
    dest = Path(dest)
    source = f"s3://{bucket}/{key}"
    head = _head(client, bucket, key)
    size, md5 = int(head["ContentLength"]), etag_md5(head.get("ETag"))
    if dest.is_file() and dest.stat().st_size == size:
        say(f"{dest} is complete ({size} bytes); skipped")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part(dest)
    if size == 0:
        part.write_bytes(b"")
    report = _progress(source, size, say)
    running = _RunningMD5(part)
    for attempt in range(1, attempts + 1):
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            say(f"{part} is larger than {source} ({have} > {size} bytes); restarting")
            part.unlink()
            have = 0
        if have == size:
            break
        if have:
            say(f"resuming {source} at byte {have} of {size}")
        try:
            args = {"Range": f"bytes={have}-"} if have else {}
            response = client.get_object(Bucket=bucket, Key=key, **args)
            if have and not response.get("ContentRange"):
                say(f"{source}: the server ignored the byte range; restarting from 0")
                have = 0
            if md5:
                running.start(have)
            with open(part, "ab" if have else "wb") as fh:
                done = have
                for chunk in response["Body"].iter_chunks(chunk_size):
                    fh.write(chunk)
                    if md5:
                        running.update(chunk)
                    done += len(chunk)
                    report(done)
        except ClientError as err:
            raise _client_error(err, bucket, key) from err
        except (BotoCoreError, OSError) as err:
            _retry_or_give_up(source, err, attempt, attempts, part, say)
            continue
        if part.stat().st_size >= size:
            break
    if part.stat().st_size == size:
        if md5 is None:
            say(f"{source}: ETag {head.get('ETag')} states no MD5 (a multipart upload); checked by size only")
        elif (got := running.hexdigest(size)) != md5:
            part.unlink()
            raise CorruptDownload(
                f"{source}: the {size} bytes received have MD5 {got}, but the object's ETag states {md5}; the "
                f"corrupt {part} was deleted, run the workflow again to download the file again"
            )
    _finish(part, dest, size, source)
    say(f"downloaded {source} -> {dest} ({size} bytes{', MD5 verified' if md5 else ''})")
    return dest


# ---------------------------------------------------------------------------------------------------------------
# HTTP (OSF)

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+|\*)(?:-(\d+))?/(\d+|\*)")


def _total_from_content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a ``Content-Range`` header; None where the header leaves it open."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None
    start = None if match.group(1) == "*" else int(match.group(1))
    total = None if match.group(3) == "*" else int(match.group(3))
    return start, total


def download_url(
    url: str,
    dest: str | os.PathLike,
    *,
    chunk_size: int = 8 * MiB,
    attempts: int = 5,
    timeout: float = 60.0,
    log: Log | None = None,
) -> Path:
    """Download ``url`` to ``dest`` over HTTP(S), resuming ``dest.part`` with Range requests; size-checked.

    The size comes from ``Content-Range`` (206) or ``Content-Length`` (200, which also restarts a partial file);
    416 means the partial file already holds every byte. Redirects (OSF sends one to its storage) are followed.
    """
    say = log or (lambda msg: None)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part(dest)
    size: int | None = None
    for attempt in range(1, attempts + 1):
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if response.status == 206:
                    start, size = _total_from_content_range(response.headers.get("Content-Range"))
                    if start != have:
                        raise IncompleteDownload(f"{url}: asked for byte {have}, the server sent byte {start}")
                    mode, done = "ab", have
                    say(f"resuming {url} at byte {have} of {size}")
                else:
                    length = response.headers.get("Content-Length")
                    size = int(length) if length is not None else None
                    mode, done = "wb", 0
                    if have:
                        say(f"{url}: the server ignored the byte range; restarting from 0")
                report = _progress(url, size or 0, say)
                with open(part, mode) as fh:
                    while chunk := response.read(chunk_size):
                        fh.write(chunk)
                        done += len(chunk)
                        report(done)
        except urllib.error.HTTPError as err:
            if err.code == 416:
                _, size = _total_from_content_range(err.headers.get("Content-Range"))
                if size is not None and have == size:
                    break
                say(f"{url}: range {have}- not satisfiable (size {size}); restarting")
                part.unlink(missing_ok=True)
                continue
            if err.code == 404:
                raise FileNotFoundError(f"{url} was not found (HTTP 404); check the URL in the config") from err
            if attempt == attempts:
                raise
            say(f"{url}: HTTP {err.code}; retrying ({attempt}/{attempts})")
            time.sleep(min(2**attempt, 30))
            continue
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            if isinstance(err, IncompleteDownload):
                raise
            _retry_or_give_up(url, err, attempt, attempts, part, say)
            continue
        if size is None or part.stat().st_size >= size:
            break
    if size is None:
        say(f"{url}: the server gave no size, so {dest} is not size-checked")
    _finish(part, dest, size, url)
    say(f"downloaded {url} -> {dest} ({dest.stat().st_size} bytes)")
    return dest
