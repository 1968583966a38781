"""The THINGS image archive: its password (the accepted image terms) and unpacking it where the loaders look.

docs/data-formats.md 3: a password-protected zip on OSF whose layout changed over time; the images end up at
``<images_root>/object_images/<concept>/<file>`` whatever folders the archive puts above them.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from gradbrain.data.download.files import THINGS_PASSWORD_ENV, THINGS_PASSWORD_URL, TermsNotAccepted
from gradbrain.data.download.transfer import Log, MiB
from gradbrain.data.things_meg.layout import IMAGE_SUFFIXES


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
    per-letter archives nested inside it (docs/data-formats.md 3) give the same tree. The tree is built in
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
