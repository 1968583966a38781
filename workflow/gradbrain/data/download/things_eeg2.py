"""THINGS-EEG2 from OSF: find a file by name through the OSF API, download it with its MD5 checked, and unpack.

The preprocessed EEG is one archive per participant (``sub-XX.zip``, OSF project anp5v) and the image set is
``image_metadata.npy`` beside ``training_images.zip`` and ``test_images.zip`` (OSF project y63gw); OSF states an MD5
for every stored file, which the downloaded bytes must have (docs/data-formats.md 6.1).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from gradbrain.data.download.transfer import CorruptDownload, Log, MiB, download_url
from gradbrain.data.things_eeg2.layout import PARTS

OSF_API_ENV = "OSF_API_URL"
"""Environment variable that points the OSF API at a mirror (the tests use a server on loopback)."""
OSF_API = "https://api.osf.io"


def osf_file(node: str, name: str, api: str | None = None) -> dict:
    """Download URL, size and MD5 of the file ``name`` at the top of OSF project ``node``'s storage."""
    base = (api or os.environ.get(OSF_API_ENV) or OSF_API).rstrip("/")
    query = urllib.parse.urlencode({"filter[name]": name})
    url = f"{base}/v2/nodes/{node}/files/osfstorage/?{query}"
    with urllib.request.urlopen(url, timeout=60) as response:
        listing = json.load(response)
    found = [f for f in listing.get("data", []) if f.get("attributes", {}).get("name") == name]
    if not found:
        raise FileNotFoundError(
            f"{name} is not in OSF project {node} ({url}); check the project at https://osf.io/{node}/ and the "
            "file names in docs/data-formats.md 6.1, or download the files yourself and set download: false"
        )
    attributes = found[0]["attributes"]
    return {
        "url": found[0]["links"]["download"],
        "size": attributes.get("size"),
        "md5": (attributes.get("extra", {}).get("hashes", {}) or {}).get("md5"),
    }


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


def download_osf(node: str, name: str, dest: str | os.PathLike, *, log: Log | None = None) -> Path:
    """Download ``name`` of OSF project ``node`` to ``dest`` (resumable, size-checked) and check the MD5 OSF states."""
    info = osf_file(node, name)
    dest = download_url(info["url"], dest, log=log)
    if info["size"] is not None and dest.stat().st_size != int(info["size"]):
        raise CorruptDownload(f"{dest}: {dest.stat().st_size} bytes, OSF states {info['size']}; delete it and retry")
    if info["md5"] and (got := _md5(dest)) != info["md5"]:
        dest.unlink()
        raise CorruptDownload(
            f"{dest}: MD5 {got}, but OSF states {info['md5']} for {name}; the corrupt file was deleted, run the "
            "workflow again to download it again"
        )
    return dest


def _extract(archive: Path, pick, dest: Path) -> int:
    """Unpack the members ``pick(name)`` maps to a relative path into a temporary folder renamed to ``dest``."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    count = 0
    try:
        try:
            zf = zipfile.ZipFile(archive)
        except zipfile.BadZipFile as err:
            raise zipfile.BadZipFile(f"{archive} is not a complete zip archive ({err}); delete it and retry") from err
        with zf:
            for info in zf.infolist():
                target = None if info.is_dir() else pick(PurePosixPath(info.filename.replace("\\", "/")))
                if target is None:
                    continue
                out = tmp / target
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as fh:
                    shutil.copyfileobj(src, fh, 8 * MiB)
                count += 1
        if count == 0:
            raise ValueError(f"{archive} holds none of the expected files; is it the THINGS-EEG2 archive?")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count


def unpack_subject(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """``sub-XX.zip`` -> ``dest`` (``<root>/sub-XX``) with the two preprocessed files, wherever the zip nests them."""
    names = {f"preprocessed_eeg_{part}.npy" for part, _, _ in PARTS.values()}
    dest = Path(dest)
    _extract(Path(archive), lambda p: p.name if p.name in names else None, dest)
    missing = sorted(n for n in names if not (dest / n).is_file())
    if missing:
        shutil.rmtree(dest)
        raise ValueError(f"{archive} lacks {missing}; delete it and download it again")
    return dest


def unpack_images(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """``training_images.zip`` / ``test_images.zip`` -> ``dest/<NNNNN_concept>/<file>.jpg``."""

    def pick(path: PurePosixPath) -> str | None:
        if path.suffix.lower() != ".jpg" or "__MACOSX" in path.parts or len(path.parts) < 2 or ".." in path.parts:
            return None
        return f"{path.parts[-2]}/{path.name}"

    dest = Path(dest)
    _extract(Path(archive), pick, dest)
    return dest
