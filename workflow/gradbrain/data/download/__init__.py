"""Fetch the real datasets: NSD and THINGS-MEG from anonymous S3, the THINGS images from OSF.

Every transfer is resumable and size-checked: bytes go to ``<file>.part``, an interrupted transfer resumes from
the end of that file with an HTTP Range request, the size is compared with the server's (S3 ``ContentLength`` of a
HEAD request, or HTTP ``Content-Length`` / ``Content-Range``), and only a complete file is renamed to its final
name. A file already present with the right size is skipped. Sources, paths and licences: shared/reference
data-formats.md sections 1.1-1.2 (NSD), 2.1-2.5 (THINGS-MEG) and 3 (THINGS images). The dataset modules are
imported only where the file lists need them, so a download job loads boto3 and little else.

The S3 endpoint follows the standard AWS settings, so ``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``) points the
downloads at a mirror or at a local S3-compatible server (the tests use moto's).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

NSD_BUCKET = "natural-scenes-dataset"
"""Public AWS Open Data bucket of NSD (data-formats.md 1.1)."""
NSD_TERMS_URL = "https://cvnlab.slite.page/p/IB6BSeW_7o/Terms-and-Conditions"
NSD_SITE = "https://naturalscenesdataset.org"
OPENNEURO_BUCKET = "openneuro.org"
THINGS_MEG_ACCESSION = "ds004212"
THINGS_MEG_SPLITS = 3
"""Split files after the first per participant: preprocessed_P{n}-epo.fif plus -epo-1..3.fif (data-formats.md 2.5)."""
THINGS_IMAGES_URL = "https://files.osf.io/v1/resources/jum2f/providers/osfstorage/670d6f7dbce84f4a7bb9371b"
"""images_THINGS.zip of the THINGS database (OSF project jum2f), as Meta's neuralfetch fetches it."""
THINGS_ARCHIVE = "images_THINGS.zip"
THINGS_PASSWORD_ENV = "THINGS_PASSWORD"
THINGS_PASSWORD_URL = "https://osf.io/jum2f/files/52wrx"
"""password_images.txt on OSF; reading it means accepting the THINGS image terms."""

MiB = 1 << 20
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
Log = Callable[[str], object]


class TermsNotAccepted(PermissionError):
    """The dataset's terms must be accepted in the config before it is downloaded."""


class MissingObjectError(FileNotFoundError):
    """The requested key is not in the bucket."""


class IncompleteDownload(OSError):
    """A transfer ended before the size announced by the server was reached."""


# ---------------------------------------------------------------------------------------------------------------
# What to fetch


def require_nsd_terms(accepted: bool, dataset: str = "nsd") -> None:
    """Stop unless the user set ``accept_terms: true`` for this NSD dataset (data-formats.md 1.1)."""
    if accepted:
        return
    raise TermsNotAccepted(
        f"NSD terms not accepted: datasets.{dataset}.accept_terms is false, so nothing is downloaded from "
        f"s3://{NSD_BUCKET}. NSD may be downloaded only by users who submitted the NSD Data Access Agreement "
        f"(the form linked from {NSD_SITE}) and accept the NSD Terms and Conditions ({NSD_TERMS_URL}): research "
        "or educational use, no redistribution of the data or any part of it, no attempt to re-identify subjects, "
        f"and citation of Allen et al. 2022. After doing so, set datasets.{dataset}.accept_terms: true (with "
        f"download: true) in your config, or set download: false and point datasets.{dataset}.root at a copy you "
        "downloaded yourself."
    )


def nsd_shared_keys() -> list[str]:
    """Bucket keys every NSD study needs besides the subjects' files: design, stimulus info and the image brick."""
    from gradbrain.data import nsd

    root = Path(".")
    return [p.as_posix() for p in (nsd.expdesign_path(root), nsd.stim_info_path(root), nsd.stimuli_path(root))]


def things_meg_files(subject: int | str) -> list[str]:
    """Paths under the THINGS-MEG root of one participant's preprocessed epochs: the first file and its splits."""
    from gradbrain.data import things_meg

    first = things_meg.epochs_path(Path("."), subject).as_posix()
    return [first] + [first.replace("-epo.fif", f"-epo-{k}.fif") for k in range(1, THINGS_MEG_SPLITS + 1)]


def openneuro_key(path: str) -> str:
    """Key in s3://openneuro.org of a path under the ds004212 root (data-formats.md 2.1)."""
    return f"{THINGS_MEG_ACCESSION}/{PurePosixPath(path).as_posix()}"


def download_datasets(datasets: Mapping[str, dict], fmt: str) -> dict[str, dict]:
    """The real datasets of a format that set ``download: true`` (a simulated study is never downloaded)."""
    return {
        name: ds
        for name, ds in datasets.items()
        if ds["format"] == fmt and ds.get("download") and not ds.get("simulated")
    }


def roots_pattern(roots: Iterable[str]) -> str:
    """A regex alternation of normalised roots, for a rule's wildcard constraint (matches nothing when empty)."""
    escaped = sorted({re.escape(os.path.normpath(r)) for r in roots})
    return "|".join(escaped) if escaped else "__none__"


def download_targets(dataset: Mapping, subject: int | str | None = None) -> list[str]:
    """Files a job of this dataset reads, as paths under its roots: one subject's (prepare) or the extraction's (None).

    NSD: ``nsd.required_files`` for a subject, :func:`nsd_shared_keys` for the extraction. THINGS-MEG: the epochs
    files of the subject, or of every subject plus ``<images_root>/object_images`` for the extraction (which reads
    the trial metadata of every participant and the images).
    """
    root = os.path.normpath(dataset["root"])
    if dataset["format"] == "nsd":
        if subject is None:
            keys = nsd_shared_keys()
        else:
            from gradbrain.data import nsd

            keys = nsd.required_files(
                int(subject),
                dataset["sessions"][int(subject)],
                dataset["rois"],
                fmt=dataset["beta_format"],
                space=dataset["space"],
                beta_version=dataset["beta_version"],
            )
        return [f"{root}/{k}" for k in keys]
    subjects = dataset["subjects"] if subject is None else [subject]
    files = [f"{root}/{f}" for s in subjects for f in things_meg_files(s)]
    if subject is None:
        files.append(f"{os.path.normpath(dataset['images_root'])}/object_images")
    return files


def nsd_terms(datasets: Mapping[str, dict], root: str) -> dict:
    """Whether every NSD dataset downloading into ``root`` accepted the terms, and the first that did not."""
    names = [n for n, ds in download_datasets(datasets, "nsd").items() if os.path.normpath(ds["root"]) == root]
    refused = [n for n in names if not datasets[n].get("accept_terms")]
    return {"accepted": bool(names) and not refused, "dataset": (refused or names or ["nsd"])[0]}


def image_urls(datasets: Mapping[str, dict]) -> dict[str, str]:
    """Normalised images_root -> archive URL of every THINGS-MEG dataset that downloads."""
    return {
        os.path.normpath(ds["images_root"]): ds.get("images_url", THINGS_IMAGES_URL)
        for ds in download_datasets(datasets, "things_meg").values()
    }


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


# ---------------------------------------------------------------------------------------------------------------
# THINGS images


def things_password(environ: Mapping[str, str] | None = None) -> str:
    """The THINGS archive password from the environment variable ``THINGS_PASSWORD`` (never from a file in the repo)."""
    value = (os.environ if environ is None else environ).get(THINGS_PASSWORD_ENV, "")
    if not value:
        raise TermsNotAccepted(
            f"the environment variable {THINGS_PASSWORD_ENV} is not set. The THINGS image archive is "
            f"password-protected: read password_images.txt on OSF ({THINGS_PASSWORD_URL}; reading it means "
            f"accepting the THINGS image terms), then export {THINGS_PASSWORD_ENV}=<password> before running the "
            "workflow. The password is never read from a config file, so that it is not committed. Alternatively "
            "unpack the images yourself to <images_root>/object_images/<concept>/<file> and set download: false."
        )
    return value


def _image_target(name: str) -> PurePosixPath | None:
    """``<concept>/<file>`` of an image member, whatever folders the archive puts above it; None for other files."""
    path = PurePosixPath(name.replace("\\", "/"))
    if not path.name.lower().endswith(IMAGE_SUFFIXES) or path.name.startswith("._") or "__MACOSX" in path.parts:
        return None
    if len(path.parts) < 2 or ".." in path.parts or path.parts[-2] in ("", ".", ".."):
        raise ValueError(f"archive member {name!r} is not <concept>/<file> under a folder; refusing to unpack it")
    return PurePosixPath(path.parts[-2], path.name)


def _unpack(archive: zipfile.ZipFile, label: str, dest: Path, password: bytes, say: Log, count: list[int]) -> None:
    for info in archive.infolist():
        if info.is_dir():
            continue
        try:
            if info.filename.lower().endswith(".zip"):
                with archive.open(info, pwd=password) as inner, zipfile.ZipFile(inner) as nested:
                    _unpack(nested, f"{label}:{info.filename}", dest, password, say, count)
                continue
            target = _image_target(info.filename)
            if target is None:
                continue
            out = dest / target
            out.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info, pwd=password) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, MiB)
        except RuntimeError as err:
            if "password" in str(err).lower():
                raise PermissionError(
                    f"the password in {THINGS_PASSWORD_ENV} does not open {label} (member {info.filename}): {err}. "
                    f"Copy it again from password_images.txt ({THINGS_PASSWORD_URL})"
                ) from err
            raise
        except NotImplementedError as err:
            raise NotImplementedError(
                f"{label}: member {info.filename} uses a compression or encryption Python's zipfile cannot read "
                f"({err}). Unpack the archive with 7-Zip (7z x -p<password>) so that "
                "<images_root>/object_images/<concept>/<file> exists, and set download: false"
            ) from err
        count[0] += 1
        if count[0] % 2000 == 0:
            say(f"{label}: {count[0]} images unpacked")


def unpack_things_images(
    archive: str | os.PathLike, images_root: str | os.PathLike, password: str, log: Log | None = None
) -> Path:
    """Unpack the THINGS image archive into ``<images_root>/object_images/<concept>/<file>`` (what the loaders read).

    Images are placed by their last two path components, so the current archive (object_images/...) and the older
    per-letter archives nested inside it (data-formats.md 3) give the same tree. The tree is built in
    ``object_images.partial`` and renamed when complete, so a failure leaves no partial ``object_images``.
    """
    say = log or (lambda msg: None)
    archive = Path(archive)
    dest = Path(images_root) / "object_images"
    if dest.exists():
        raise FileExistsError(f"{dest} already exists; remove it to unpack {archive} again, or use it as it is")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    count = [0]
    try:
        try:
            zf = zipfile.ZipFile(archive)
        except zipfile.BadZipFile as err:
            raise zipfile.BadZipFile(
                f"{archive} is not a complete zip archive ({err}); delete it and download it again"
            ) from err
        with zf:
            _unpack(zf, str(archive), tmp, password.encode(), say, count)
        if count[0] == 0:
            raise ValueError(f"{archive} holds no images (.jpg, .jpeg, .png); is it the THINGS image archive?")
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"unpacked {count[0]} images from {archive} into {dest}")
    return dest
