"""The rules of workflow/rules/*.smk read as text: each rule's directives, for the convention and environment tests."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from helpers import REPO

RULES_DIR = REPO / "workflow" / "rules"
ACTIONS = ("script", "shell", "run", "notebook", "wrapper", "cwl", "template_engine")


def rule_blocks() -> list[tuple[Path, str, str]]:
    """(file, rule name, text of the rule) for every rule and checkpoint in workflow/rules/*.smk.

    ``use rule A as B with:`` gives B the text of A with B's own directives in place of A's (Snakemake's inheritance).
    """
    blocks: list[tuple[Path, str, str]] = []
    derived: list[tuple[Path, str, str, str]] = []
    for smk in sorted(RULES_DIR.glob("*.smk")):
        current: tuple[str, str | None, list[str]] | None = None
        for line in [*smk.read_text().splitlines(), "# end"]:
            header = re.match(r"(?:rule|checkpoint)\s+(\w+)\s*:", line)
            use = re.match(r"use rule\s+(\w+)\s+as\s+(\w+)\s+with\s*:", line)
            if header or use or line == "# end" or (line.strip() and not line[0].isspace() and line[0] != "#"):
                if current:
                    name, parent, lines = current
                    if parent is None:
                        blocks.append((smk, name, "\n".join(lines)))
                    else:
                        derived.append((smk, name, parent, "\n".join(lines)))
                current = (header.group(1), None, []) if header else (use.group(2), use.group(1), []) if use else None
            elif current and not line.lstrip().startswith("#"):
                current[2].append(line)
    texts = {name: (smk, text) for smk, name, text in blocks}
    for smk, name, parent, own in derived:
        merged = {**directive_blocks(texts[parent][1]), **directive_blocks(own)}
        blocks.append((smk, name, "\n".join(merged.values())))
    return blocks


def directive_blocks(block: str) -> dict[str, str]:
    """Directive -> its lines (header and the more-indented lines under it), in order."""
    out: dict[str, list[str]] = {}
    lines = [line for line in block.splitlines() if line.strip()]
    base = min((len(line) - len(line.lstrip()) for line in lines), default=0)
    key = None
    for line in lines:
        match = re.match(rf"^ {{{base}}}(\w+):", line)
        if match:
            key = match.group(1)
            out[key] = []
        if key is not None:
            out[key].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def directives(block: str) -> dict[str, str]:
    """Directive -> its value (the text on the same line, or on the following more-indented lines)."""
    lines = block.splitlines()
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    if not indents:
        return {}
    base = min(indents)
    found: dict[str, str] = {}
    for i, line in enumerate(lines):
        match = re.match(rf"^ {{{base}}}(\w+):(.*)$", line)
        if not match:
            continue
        value = match.group(2).strip()
        if not value:
            following = []
            for nxt in lines[i + 1 :]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= base:
                    break
                following.append(nxt.strip())
            value = " ".join(v for v in following if v)
        found[match.group(1)] = value
    return found


def literal(value: str, smk: Path, rule: str, directive: str) -> str:
    try:
        result = ast.literal_eval(value.rstrip(","))
    except (ValueError, SyntaxError):
        pytest.fail(
            f"{smk.name}: rule {rule}: {directive}: must be a string literal so that it can be checked, got {value!r}"
        )
    assert isinstance(result, str), f"{smk.name}: rule {rule}: {directive}: expected a path, got {value!r}"
    return result


def action_rules() -> list[tuple[Path, str, dict[str, str]]]:
    if not list(RULES_DIR.glob("*.smk")):
        pytest.skip("workflow/rules has no .smk files yet")
    rules = [(smk, name, directives(block)) for smk, name, block in rule_blocks()]
    return [(smk, name, d) for smk, name, d in rules if any(a in d for a in ACTIONS)]
