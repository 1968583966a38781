"""Running the workflow from the tests: one Snakemake command line, shared by the end-to-end test modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def run_snakemake(
    configfile: Path, *args: str, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    cmd = [
        *SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(REPO),
        "--configfile",
        str(configfile),
        "--workflow-profile",
        "none",
        "--cores",
        "2",
        *args,
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc
