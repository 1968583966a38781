"""The paper's ROIs (issue 24, item 11): 15 HCP-MMP1 parcels in config/paper.yaml, the visual-only set an overlay."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from helpers import REPO
from snakemake.utils import update_config, validate

from gradbrain.config import active_rois
from gradbrain.data.nsd.paths import required_files
from gradbrain.data.nsd.rois import _requested_groups, read_ctab

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
PAPER = REPO / "config" / "paper.yaml"
VISUAL = REPO / "config" / "overlays" / "paper_visual.yaml"
NAMED = ["V1", "V2", "MT", "VMV2", "FFC", "44", "45", "IFSa", "IFSp"]
"""The parcels the paper names (docs/decisions.md: the other six are chosen here)."""


def _load(*paths):
    config = yaml.safe_load(paths[0].read_text())
    for path in paths[1:]:
        update_config(config, yaml.safe_load(path.read_text()))
    validate(config, str(SCHEMA))
    return config


def test_paper_reads_15_hcp_parcels_with_every_named_one():
    rois = active_rois(_load(PAPER)["datasets"]["nsd"]["rois"], "nsd")
    assert list(rois) == ["HCP_MMP1"]
    assert len(set(rois["HCP_MMP1"])) == 15 and set(NAMED) <= set(rois["HCP_MMP1"])


def test_visual_overlay_replaces_the_parcels_and_downloads_its_atlases_only():
    rois = active_rois(_load(PAPER, VISUAL)["datasets"]["nsd"]["rois"], "nsd")
    streams = ["midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal"]
    assert rois == {"prf-visualrois": ["V1", "V2", "V3", "hV4"], "streams": streams}
    files = required_files(1, 1, rois)
    assert not any("HCP_MMP1" in f for f in files) and any("streams" in f for f in files)
    assert any("HCP_MMP1.nii.gz" in f for f in required_files(1, 1, active_rois({"HCP_MMP1": NAMED}, "nsd")))


def test_all_atlases_null_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match=r"datasets\.nsd\.rois: every atlas is null"):
        active_rois({"HCP_MMP1": None}, "datasets.nsd.rois")


def test_parcels_are_looked_up_by_name_in_an_hcp_ctab(tmp_path):
    """NSD's HCP_MMP1.mgz.ctab in its format (``<id> <name>``, 0 Unknown first, a trailing tab on some lines):
    numeric parcel names such as 44 and 45 are names, not ids; an unknown name names the file and the choices."""
    ctab = tmp_path / "HCP_MMP1.mgz.ctab"
    names = ["V1", "MST", "V6", "V2", "V3", "V4", "V8", "4", "3b", "FEF"] + [f"P{k}" for k in range(11, 74)]
    names += ["44", "45"] + [f"P{k}" for k in range(76, 180)] + ["IFSa", "IFSp"]
    ctab.write_text("0 Unknown\n" + "".join(f"{k} {name}\t\n" for k, name in enumerate(names, start=1)))
    table = read_ctab(ctab)
    groups = _requested_groups("HCP_MMP1", ["V1", "V2", "44", "45", "IFSp"], table, ctab)
    assert groups == {"V1": [1], "V2": [4], "44": [74], "45": [75], "IFSp": [181]}
    with pytest.raises(ValueError, match=r"\['FFA'\] are not in atlas 'HCP_MMP1'.*HCP_MMP1\.mgz\.ctab"):
        _requested_groups("HCP_MMP1", ["FFA"], table, ctab)


@pytest.mark.parametrize("overlays", [[], [VISUAL]], ids=["paper", "paper_visual"])
def test_dry_run_plans_the_nsd_jobs(overlays, tmp_path):
    """``snakemake -n --configfile config/paper.yaml [config/overlays/paper_visual.yaml]`` plans the study."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--forceall", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(REPO), "--workflow-profile", "none", "--configfile", str(PAPER),
           *map(str, overlays), "--config", f"results={tmp_path}"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "prepare_fmri" in proc.stdout


def test_overlay_leaves_everything_but_the_rois():
    paper, visual = _load(PAPER), _load(PAPER, VISUAL)
    del paper["datasets"]["nsd"]["rois"], visual["datasets"]["nsd"]["rois"]
    assert paper == visual
