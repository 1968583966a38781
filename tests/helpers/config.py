"""Configs as the workflow sees them: a config file with the schema's defaults filled in (the Snakefile's validate)."""

from __future__ import annotations

import copy
from functools import cache

import yaml
from snakemake.utils import validate

from helpers import REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@cache
def _validated(name: str) -> dict:
    config = yaml.safe_load((REPO / "config" / name).read_text())
    validate(config, str(SCHEMA))
    return config


def load_config(name: str = "config.yaml") -> dict:
    """A fresh copy of ``config/<name>`` validated against the schema, defaults filled in (safe to modify)."""
    return copy.deepcopy(_validated(name))


def default_config() -> dict:
    """The embedded default config (config/config.yaml), validated."""
    return load_config("config.yaml")
