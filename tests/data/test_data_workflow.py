"""The real-data rules end to end, offline: download from loopback servers, prepare, extract, encode.

Fixture trees in the real NSD and THINGS-MEG formats (tests/helpers/realdata.py) are served by moto's S3 server (as the
buckets s3://natural-scenes-dataset and s3://openneuro.org/ds004212) and by a local HTTP server (the THINGS image
archive, password-protected, standing in for OSF). A config whose roots start empty, with `download: true`, runs
`snakemake --until encode_fmri` and `--until encode_meg`; the downloaded files must equal the served ones and the
prepared targets must equal the loaders' output on the source trees.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from helpers import realdata
from helpers.snakerun import run_snakemake

from gradbrain.data.download import files as dl
from gradbrain.data.nsd import subject as nsd_subject
from gradbrain.data.nsd.paths import required_files
from gradbrain.data.things_meg import read as meg_read

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.set_index"),
    pytest.mark.skipif(shutil.which("zip") is None, reason="Info-ZIP's zip is needed to make the encrypted archive"),
]
PASSWORD = "fixture-password"
ROIS = {"prf-visualrois": ["V1", "V2", "V3", "hV4"]}
TRIALS = 60  # per session file (750 in real NSD)


def config(tmp: Path, images_url: str, **nsd_keys) -> dict:
    return {
        "results": str(tmp / "results"),
        "models": {"demo_cnn": {"weights": {"demo": False, "file": str(tmp / "demo_cnn.pt")}, "n_layers": 4}},
        "extraction": {"device": "cpu", "batch_size": 32, "chunk_images": 64},
        "datasets": {
            "nsd": {
                "modality": "fmri",
                "format": "nsd",
                "root": str(tmp / "data" / "nsd"),
                "subjects": [1],
                "sessions": 2,
                "trials_per_session": TRIALS,
                "rois": ROIS,
                "heldout": "shared1000",
                "download": True,
                "accept_terms": True,
                **nsd_keys,
            },
            "things_meg": {
                "modality": "meg",
                "format": "things_meg",
                "root": str(tmp / "data" / "ds004212"),
                "images_root": str(tmp / "data" / "things-images"),
                "subjects": [1],
                "heldout": "test",
                "download": True,
                "images_url": images_url,
            },
        },
        "hierarchy": {"permutations": 20, "bootstraps": 10},
        # 4 layers x 32 control components would leave no residual degrees of freedom with these ~50 images
        "encoding": {"partition": {"control_components": 4, "gradient_components": 4}},
    }


def snakemake(tmp: Path, cfg: dict, *args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    path = tmp / f"config-{len(list(tmp.glob('config-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return run_snakemake(path, "--replace-workflow-config", *args, check=check, env=env)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("served")
    src = tmp / "source"
    realdata.build_nsd(src / "nsd", n_sessions=2, trials=TRIALS)
    realdata.build_things_meg(src / "ds004212", src / "things-images")
    moto = realdata.start_moto()
    realdata.upload_tree(moto.admin, src / "nsd", dl.NSD_BUCKET)
    realdata.upload_tree(moto.admin, src / "ds004212", dl.OPENNEURO_BUCKET, prefix=f"{dl.THINGS_MEG_ACCESSION}/")
    archive = realdata.zip_with_password(src / "things-images" / "object_images", tmp / dl.THINGS_ARCHIVE, PASSWORD)
    http = realdata.RangeServer.start()
    http.files[f"/{dl.THINGS_ARCHIVE}"] = archive.read_bytes()
    import timm
    import torch

    torch.manual_seed(0)
    torch.save(timm.create_model("resnet18", num_classes=12).state_dict(), tmp / "demo_cnn.pt")
    yield {"src": src, "tmp": tmp, "s3": moto.url, "url": f"{http.base}/redirect/{dl.THINGS_ARCHIVE}"}
    http.stop()
    moto.server.stop()


def study(servers, tmp: Path, **nsd_keys) -> dict:
    shutil.copy(servers["tmp"] / "demo_cnn.pt", tmp / "demo_cnn.pt")
    return config(tmp, servers["url"], **nsd_keys)


def env(servers, **extra) -> dict:
    return {"AWS_ENDPOINT_URL_S3": servers["s3"], dl.THINGS_PASSWORD_ENV: PASSWORD, **extra}


def planned_rules(dry_run: str) -> list[str]:
    """Rule names of the jobs in a dry run's output."""
    return re.findall(r"^(?:local)?rule (\w+):", dry_run, flags=re.M)


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_fmri_side_downloads_and_encodes(servers, tmp_path):
    cfg = study(servers, tmp_path)
    snakemake(tmp_path, cfg, "--until", "encode_fmri", env=env(servers))
    root, src = tmp_path / "data" / "nsd", servers["src"] / "nsd"
    wanted = sorted(set(required_files(1, 2, ROIS) + dl.nsd_shared_keys()))
    assert files_under(root) == wanted, "exactly the files the config needs, no .part left"
    for key in wanted:
        assert (root / key).read_bytes() == (src / key).read_bytes(), key
    assert not (tmp_path / "data" / "ds004212").exists(), "--until encode_fmri must not touch the MEG side"

    brain = zarr.open_group(str(tmp_path / "results" / "brain" / "nsd" / "sub-1.zarr"), mode="r")
    direct = nsd_subject.load_subject(src, 1, 2, ROIS, log=lambda m: None)
    np.testing.assert_array_equal(brain["Y"][:], direct.Y)
    assert list(brain["stimulus_id"][:]) == [f"nsd-{i:05d}" for i in direct.nsd_ids]
    assert (brain["split"][:] == "test").sum() == direct.shared.sum() > 0
    assert (tmp_path / "results" / "encoding" / "nsd" / "demo_cnn" / "sub-1.zarr").is_dir()

    plan = snakemake(tmp_path, cfg, "-n", "--until", "encode_fmri", env=env(servers))
    assert not planned_rules(plan.stdout), "a rerun on the downloaded root plans nothing"


def test_meg_side_downloads_unpacks_and_encodes(servers, tmp_path):
    cfg = study(servers, tmp_path)
    snakemake(tmp_path, cfg, "--until", "encode_meg", env=env(servers))
    root, src = tmp_path / "data" / "ds004212", servers["src"] / "ds004212"
    assert files_under(root) == sorted(dl.things_meg_files(1))
    for name in dl.things_meg_files(1):
        assert (root / name).read_bytes() == (src / name).read_bytes(), name
    images = tmp_path / "data" / "things-images"
    unpacked = [f for f in files_under(images) if not f.endswith(".snakemake_timestamp")]  # Snakemake's marker
    assert unpacked == files_under(servers["src"] / "things-images")
    assert not (images / dl.THINGS_ARCHIVE).exists(), "the archive is a temporary file"
    assert not (tmp_path / "data" / "nsd").exists()

    brain = zarr.open_group(str(tmp_path / "results" / "brain" / "things_meg" / "sub-1.zarr"), mode="r")
    direct = meg_read.load_subject(src, 1, tmax=1.3)
    n, n_ch, n_t = direct.Y.shape
    Y = np.concatenate(
        [direct.Y.transpose(0, 2, 1).reshape(n, -1), direct.test_Y.transpose(0, 2, 1).reshape(len(direct.test_ids), -1)]
    )
    np.testing.assert_allclose(brain["Y"][:], Y, rtol=1e-5, atol=1e-5)
    assert list(brain["stimulus_id"][:]) == [*direct.stimulus_ids, *direct.test_ids]
    assert (tmp_path / "results" / "encoding" / "things_meg" / "demo_cnn" / "sub-1.zarr").is_dir()


def test_nsd_terms_not_accepted_stops_before_any_transfer(servers, tmp_path):
    cfg = study(servers, tmp_path, accept_terms=False)
    plan = snakemake(tmp_path, cfg, "-n", "--until", "prepare_fmri", env=env(servers))
    assert "download_nsd" in planned_rules(plan.stdout)
    proc = snakemake(tmp_path, cfg, "--until", "prepare_fmri", env=env(servers), check=False)
    assert proc.returncode != 0
    logs = "".join(p.read_text() for p in (tmp_path / "results" / "logs" / "download_nsd").rglob("*.log"))
    assert "datasets.nsd.accept_terms is false" in logs and dl.NSD_TERMS_URL in logs
    assert not (tmp_path / "data" / "nsd").exists() or not files_under(tmp_path / "data" / "nsd")


def test_missing_password_and_pre_downloaded_roots(servers, tmp_path):
    cfg = study(servers, tmp_path)
    proc = snakemake(
        tmp_path, cfg, "--until", "unpack_things_images", env=env(servers, THINGS_PASSWORD=""), check=False
    )
    assert proc.returncode != 0
    log = next((tmp_path / "results" / "logs" / "download_things_images").rglob("*.log")).read_text()
    assert dl.THINGS_PASSWORD_ENV in log and dl.THINGS_PASSWORD_URL in log
    assert not files_under(tmp_path / "data" / "things-images")
    for ds, path in (("nsd", "nsd"), ("things_meg", "ds004212")):
        cfg["datasets"][ds].update(download=False, root=str(servers["src"] / path))
    cfg["datasets"]["things_meg"]["images_root"] = str(servers["src"] / "things-images")
    rules = set(planned_rules(snakemake(tmp_path, cfg, "-n", env=env(servers)).stdout))
    assert {"prepare_fmri", "prepare_meg", "extract_features"} <= rules
    assert not {r for r in rules if r.startswith("download_")} and "unpack_things_images" not in rules
