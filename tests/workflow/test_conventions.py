"""Conventions of the Snakemake workflow catalog: benchmarks on heavy rules, lint, formatting, catalog metadata."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO
from helpers.rules import action_rules

ROOT = REPO
LIGHT_RULES = {"report", "power"}
"""Rules that only tabulate and draw from small tables; every other rule with an action is heavy."""


def test_every_heavy_rule_has_a_log_and_a_benchmark():
    rules = action_rules()
    missing = [
        f"{smk.name}: rule {name} lacks {d}:"
        for smk, name, found in rules
        if name not in LIGHT_RULES
        for d in ("log", "benchmark")
        if d not in found
    ]
    assert not missing, "\n".join(missing)
    unknown = LIGHT_RULES - {name for _, name, _ in rules}
    assert not unknown, f"LIGHT_RULES names rules that do not exist: {unknown}"


def test_snakemake_lint_is_clean():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], capture_output=True, text=True, cwd=ROOT)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations" in output, output[-4000:]


def test_snakefmt_is_clean():
    snakefmt = shutil.which("snakefmt") or str(Path(sys.executable).with_name("snakefmt"))
    if not Path(snakefmt).exists():
        pytest.skip("snakefmt is not installed (pip install -e '.[dev]')")
    proc = subprocess.run([snakefmt, "--check", "workflow", "Snakefile"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, f"run `snakefmt workflow Snakefile`:\n{proc.stdout}{proc.stderr}"


def test_catalog_metadata():
    """The workflow catalog reads .snakemake-workflow-catalog.yml; the flags and files it names must exist."""
    meta = yaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())
    usage = meta["usage"]
    assert usage["mandatory-flags"]["desc"].strip()
    stack = usage["software-stack-deployment"]
    assert stack["conda"] is True and list(ROOT.glob("envs/*.yaml")), "conda: true needs envs/*.yaml"
    assert usage["report"] is True
    for path in (
        "config/config.yaml",
        "config/README.md",
        "workflow/schemas/config.schema.yaml",
        "profiles/slurm/config.yaml",
        "config/paper.yaml",
    ):
        assert (ROOT / path).is_file(), f"the catalog expects {path}"
    for mentioned in re.findall(r"(?:config|profiles)/[\w./-]*\w", usage["mandatory-flags"]["desc"]):
        assert (ROOT / mentioned).exists(), f".snakemake-workflow-catalog.yml names {mentioned}, which does not exist"


def test_ci_starts_the_slurm_cluster():
    """.ci/run starts the one-node cluster before the tests; the script is executable bash that parses."""
    script = ROOT / "tests" / "slurm" / "start_cluster.sh"
    assert "tests/slurm/start_cluster.sh" in (ROOT / ".ci" / "run").read_text()
    assert script.read_text().startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in script.read_text()
    assert script.stat().st_mode & 0o111, f"chmod +x {script.relative_to(ROOT)}"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
