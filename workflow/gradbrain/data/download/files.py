"""The files each job reads from a dataset's root, what the download rules fetch, and the terms that gate it.

Light on purpose (no boto3): workflow/rules/common.smk and data.smk read it while Snakemake builds the DAG. Sources,
paths and licences: docs/data-formats.md 1.1-1.2 (NSD), 2.1-2.2 (THINGS-MEG) and 3 (THINGS images).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from gradbrain.config import study_block
from gradbrain.data.nsd.paths import (
    COMPLETED_SESSIONS,
    check_distance_space,
    expdesign_path,
    required_files,
    stim_info_path,
    stimuli_path,
)
from gradbrain.data.things_eeg2 import layout as eeg2
from gradbrain.data.things_meg.layout import IMAGE_SUFFIXES, PARTICIPANTS, epochs_path

NSD_BUCKET = "natural-scenes-dataset"
"""Public AWS Open Data bucket of NSD (docs/data-formats.md 1.1)."""
NSD_TERMS_URL = "https://cvnlab.slite.page/p/IB6BSeW_7o/Terms-and-Conditions"
NSD_SITE = "https://naturalscenesdataset.org"
OPENNEURO_BUCKET = "openneuro.org"
THINGS_MEG_ACCESSION = "ds004212"
THINGS_MEG_SPLITS = 3
"""Split files after the first per participant: preprocessed_P{n}-epo.fif, -epo-1..3.fif (docs/data-formats.md 2.2)."""
THINGS_IMAGES_URL = "https://files.osf.io/v1/resources/jum2f/providers/osfstorage/670d6f7dbce84f4a7bb9371b"
"""images_THINGS.zip of the THINGS database (OSF project jum2f), as Meta's neuralfetch fetches it."""
THINGS_ARCHIVE = "images_THINGS.zip"
THINGS_EEG2_EEG_NODE = "anp5v"
"""OSF project of THINGS-EEG2's preprocessed EEG, one sub-XX.zip per participant (docs/data-formats.md 6.1)."""
THINGS_EEG2_IMAGES_NODE = "y63gw"
"""OSF project of THINGS-EEG2's image set: image_metadata.npy, training_images.zip, test_images.zip."""
THINGS_PASSWORD_ENV = "THINGS_PASSWORD"
THINGS_PASSWORD_URL = "https://osf.io/jum2f/files/52wrx"
"""password_images.txt on OSF; reading it means accepting the THINGS image terms."""


class TermsNotAccepted(PermissionError):
    """The dataset's terms must be accepted in the config before it is downloaded."""


# ---------------------------------------------------------------------------------------------------------------
# What to fetch


def require_nsd_terms(accepted: bool, dataset: str = "nsd") -> None:
    """Stop unless the user set ``accept_terms: true`` for this NSD dataset (docs/data-formats.md 1.1)."""
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
    root = Path(".")
    return [p.as_posix() for p in (expdesign_path(root), stim_info_path(root), stimuli_path(root))]


def things_meg_files(subject: int | str) -> list[str]:
    """Paths under the THINGS-MEG root of one participant's preprocessed epochs: the first file and its splits."""
    first = epochs_path(Path("."), subject).as_posix()
    return [first] + [first.replace("-epo.fif", f"-epo-{k}.fif") for k in range(1, THINGS_MEG_SPLITS + 1)]


def openneuro_key(path: str) -> str:
    """Key in s3://openneuro.org of a path under the ds004212 root (docs/data-formats.md 2.1)."""
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


def things_eeg2_files(dataset: Mapping, subject: int | str | None = None) -> list[str]:
    """THINGS-EEG2: a participant's two preprocessed files, or (None) the extraction's ``image_metadata.npy`` and the
    training_images/ and test_images/ folders."""
    if subject is None:
        images = Path(os.path.normpath(dataset["images_root"]))
        return [eeg2.metadata_path(images).as_posix()] + [(images / f).as_posix() for _, f, _ in eeg2.PARTS.values()]
    return [eeg2.eeg_path(os.path.normpath(dataset["root"]), subject, split).as_posix() for split in eeg2.PARTS]


def things_eeg2_node(name: str) -> str:
    """The OSF project that holds a THINGS-EEG2 file: the preprocessed EEG's (sub-XX.zip) or the image set's."""
    return THINGS_EEG2_EEG_NODE if name.startswith("sub-") else THINGS_EEG2_IMAGES_NODE


def download_targets(dataset: Mapping, subject: int | str | None = None) -> list[str]:
    """Files a job of this dataset reads, as paths under its roots: one subject's (prepare) or the extraction's (None).

    NSD: ``nsd.paths.required_files`` for a subject (with the MNI transform when ``distance_space`` is mni),
    :func:`nsd_shared_keys` for the extraction. THINGS-MEG: the epochs
    files of the subject, or of every subject plus ``<images_root>/object_images`` for the extraction (which reads
    the trial metadata of every participant and the images).
    """
    root = os.path.normpath(dataset["root"])
    if dataset["format"] == "nsd":
        if subject is None:
            keys = nsd_shared_keys()
        else:
            keys = required_files(
                int(subject),
                dataset["sessions"][int(subject)],
                dataset["rois"],
                fmt=dataset["beta_format"],
                space=dataset["space"],
                beta_version=dataset["beta_version"],
                distance_space=check_distance_space(
                    dataset.get("distance_space", "native"),
                    dataset["space"],
                    f"datasets.{dataset.get('name', '<name>')}.distance_space",
                ),
            )
        return [f"{root}/{k}" for k in keys]
    if dataset["format"] == "things_eeg2":
        return things_eeg2_files(dataset, subject)
    subjects = dataset["subjects"] if subject is None else [subject]
    files = [f"{root}/{f}" for s in subjects for f in things_meg_files(s)]
    if subject is None:
        files.append(f"{os.path.normpath(dataset['images_root'])}/object_images")
    return files


def local_files(dataset: Mapping, subject: int | str | None = None) -> list[str]:
    """The files a job reads from a pre-downloaded root (``download: false``), for its rule's input.

    Declared as inputs, a file that is replaced or repaired makes Snakemake run again exactly the jobs that read it.
    As :func:`download_targets`, except that NSD's extraction leaves out the stimulus-information CSV (downloaded
    with the shared files, read by no loader), and THINGS-MEG lists the split files present (however many) and
    every THINGS image under ``<images_root>/object_images`` rather than the folder, whose time stamp does not
    change when a file in it is replaced.
    """
    root = os.path.normpath(dataset["root"])
    if dataset["format"] == "nsd":
        if subject is not None:
            return download_targets(dataset, subject)
        return [f"{root}/{p.as_posix()}" for p in (expdesign_path(Path(".")), stimuli_path(Path(".")))]
    if dataset["format"] == "things_eeg2":
        if subject is not None:
            return things_eeg2_files(dataset, subject)
        images = Path(os.path.normpath(dataset["images_root"]))
        jpgs = [p.as_posix() for _, f, _ in eeg2.PARTS.values() for p in sorted((images / f).glob("*/*.jpg"))]
        return things_eeg2_files(dataset)[:1] + jpgs
    files = []
    for s in dataset["subjects"] if subject is None else [subject]:
        first = epochs_path(root, s)
        files.append(first.as_posix())
        k = 1
        while (split := first.with_name(first.name.replace("-epo.fif", f"-epo-{k}.fif"))).is_file():
            files.append(split.as_posix())
            k += 1
    if subject is None:
        images = Path(os.path.normpath(dataset["images_root"])) / "object_images"
        files += sorted(p.as_posix() for p in images.glob("*/*") if p.name.lower().endswith(IMAGE_SUFFIXES))
    return files


def check_roots(datasets: Mapping[str, Mapping]) -> None:
    """Stop when a pre-downloaded root (``root``, THINGS-MEG's ``images_root``) is not a folder, naming the key.

    Run while the DAG is built, so that a wrong path fails the dry run rather than a job on a cluster node. Roots
    that the workflow fills itself (simulated studies, ``download: true``) are not checked.
    """
    problems = []
    for name, ds in datasets.items():
        if ds.get("simulated") or ds.get("download"):
            continue
        terms = " and accept_terms: true (after accepting the NSD terms)" if ds["format"] == "nsd" else ""
        for key in ("root",) if ds["format"] == "nsd" else ("root", "images_root"):
            if not os.path.isdir(ds[key]):
                problems.append(
                    f"datasets.{name}.{key}: {ds[key]} does not exist or is not a folder. Fix the path, or set "
                    f"datasets.{name}.download: true{terms} to fetch the data into it (config/README.md)"
                )
    if problems:
        raise FileNotFoundError("\n".join(problems))


def check_subjects(datasets: Mapping[str, Mapping], sim: Mapping) -> None:
    """Stop when a dataset lists a subject its data cannot hold, naming the key: NSD's subjects are 1..8,
    THINGS-MEG's participants 1..4, THINGS-EEG2's 1..10, a simulated study's 1..``simulation.<block>.n_subjects``
    (the block of ``study_block``: its modality, eeg for THINGS-EEG2).

    Run while the DAG is built: such a subject's jobs cannot be made, and the run must stop before any job starts
    rather than leave the dataset out.
    """
    problems = []
    for name, ds in datasets.items():
        if ds.get("simulated"):
            block = study_block(ds)
            n = int(sim[block]["n_subjects"])
            valid = range(1, n + 1)
            fact = f"the simulated study has subjects 1..{n} (simulation.{block}.n_subjects)"
        elif ds["format"] == "nsd":
            valid, fact = tuple(COMPLETED_SESSIONS), "NSD subjects are 1..8"
        elif ds["format"] == "things_eeg2":
            valid, fact = eeg2.PARTICIPANTS, "THINGS-EEG2 participants are 1..10"
        else:
            valid, fact = PARTICIPANTS, "THINGS-MEG participants are 1..4"
        bad = [str(s) for s in ds["subjects"] if int(s) not in valid]
        if bad:
            problems.append(f"datasets.{name}.subjects: {fact}, got {', '.join(bad)}; remove it from the list")
    if problems:
        raise ValueError("\n".join(problems))


def check_local_files(datasets: Mapping[str, Mapping], shown: int = 5) -> None:
    """Stop when a file that a configured subject's jobs read is missing from a pre-downloaded root, naming the
    file, the dataset and what to do; run while the DAG is built, after :func:`check_roots`.

    Without it the jobs of that subject (and the extraction, which reads every subject's trials) could not be made,
    and Snakemake, finding the summary tables of an earlier run present, would leave the dataset out of the run
    without a word. The THINGS images are checked as a folder holding at least one image (the extraction names a
    missing one); roots the workflow fills itself are not checked.
    """
    problems = []
    for name, ds in datasets.items():
        if ds.get("simulated") or ds.get("download"):
            continue
        missing: dict[str, list[str]] = {}
        for subject in [None, *ds["subjects"]] if ds["format"] != "things_meg" else ds["subjects"]:
            for path in local_files(ds, subject):
                if not os.path.exists(path):
                    missing.setdefault(path, []).append("every subject" if subject is None else f"subject {subject}")
        lines = [f"datasets.{name}: {p} is missing ({', '.join(dict.fromkeys(w))})" for p, w in missing.items()]
        if ds["format"] == "things_meg":
            images = Path(ds["images_root"]) / "object_images"
            if not any(p.name.lower().endswith(IMAGE_SUFFIXES) for p in images.glob("*/*")):
                lines.append(f"datasets.{name}: no THINGS image in {images}/<concept>/ (unpack {THINGS_ARCHIVE} there)")
        if ds["format"] == "things_eeg2":
            for _, folder, _ in eeg2.PARTS.values():
                images = Path(ds["images_root"]) / folder
                if not any(images.glob("*/*.jpg")):
                    lines.append(f"datasets.{name}: no image in {images}/<NNNNN_concept>/ (unpack {folder}.zip there)")
        if lines:
            more = [f"  ... and {len(lines) - shown} more"] if len(lines) > shown else []
            terms = " and accept_terms: true" if ds["format"] == "nsd" else ""
            problems += lines[:shown] + more
            problems.append(
                f"Put the files there (docs/data-formats.md), set datasets.{name}.download: true{terms} to fetch "
                f"them, or remove the subjects that lack them from datasets.{name}.subjects."
            )
    if problems:
        raise FileNotFoundError("\n".join(problems))


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
