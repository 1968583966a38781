"""`.ci/run` installs and tests exactly as README.md tells a user to."""

from __future__ import annotations

import os
import re

from helpers import REPO

ROOT = REPO
CI = ROOT / ".ci" / "run"


def ci_command(name: str) -> str:
    match = re.search(rf"^{name}='(.+)'$", CI.read_text(), re.M)
    assert match, f".ci/run has no one-line {name}='...'"
    return match.group(1)


def test_ci_script_is_an_executable_strict_bash_script():
    text = CI.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(CI, os.X_OK), ".ci/run is not executable (chmod +x .ci/run)"
    assert "python3 -m venv" in text


def test_ci_commands_mirror_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name in ("INSTALL_CMD", "TEST_CMD"):
        command = ci_command(name)
        assert command in readme, f"README.md no longer says `{command}` ({name} in .ci/run): update one of them"


def test_ci_runs_ruff_lint_and_format_checks():
    """.ci/run lints and format-checks with ruff (pinned in the dev extra) before the tests."""
    text = CI.read_text()
    assert ".venv/bin/ruff check ." in text and ".venv/bin/ruff format --check ." in text
    assert text.index("ruff check") < text.index('eval "$TEST_CMD"')
