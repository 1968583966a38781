"""Resumable, verified transfers: S3 objects (NSD, OpenNeuro) with boto3, and HTTP(S) files (OSF).

Bytes go to ``<file>.part``; an interrupted transfer resumes from the end of that file with a Range request, the size
is compared with the server's (S3 ``ContentLength`` of a HEAD request, or HTTP ``Content-Length`` /
``Content-Range``), and only a complete file is renamed to its final name. A file already present with the right
size is skipped.

The S3 endpoint follows the standard AWS settings, so ``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``) points the
downloads at a mirror or at a local S3-compatible server (the tests use moto's).
"""

from __future__ import annotations

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


def remote_size(client, bucket: str, key: str) -> int:
    """Size in bytes of ``s3://bucket/key`` from a HEAD request; a missing key names the key and the bucket."""
    try:
        return int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
    except ClientError as err:
        raise _client_error(err, bucket, key) from err


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
    """Download ``s3://bucket/key`` to ``dest``, resuming ``dest.part``; skip a complete ``dest``.

    The size of the object (HEAD) decides: a ``dest`` of that size is complete and skipped; a ``.part`` shorter
    than it is continued with a Range request (a longer one, or a server that ignores the range, restarts it); a
    broken connection resumes from the bytes received, up to ``attempts`` times.
    """
    say = log or (lambda msg: None)
    dest = Path(dest)
    source = f"s3://{bucket}/{key}"
    size = remote_size(client, bucket, key)
    if dest.is_file() and dest.stat().st_size == size:
        say(f"{dest} is complete ({size} bytes); skipped")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part(dest)
    if size == 0:
        part.write_bytes(b"")
    report = _progress(source, size, say)
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
            with open(part, "ab" if have else "wb") as fh:
                done = have
                for chunk in response["Body"].iter_chunks(chunk_size):
                    fh.write(chunk)
                    done += len(chunk)
                    report(done)
        except ClientError as err:
            raise _client_error(err, bucket, key) from err
        except (BotoCoreError, OSError) as err:
            _retry_or_give_up(source, err, attempt, attempts, part, say)
            continue
        if part.stat().st_size >= size:
            break
    _finish(part, dest, size, source)
    say(f"downloaded {source} -> {dest} ({size} bytes)")
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
