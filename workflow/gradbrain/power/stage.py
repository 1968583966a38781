"""The power stage's edge: rule power_cell writes one cell's per-subject values, rule power the rates and curves."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from gradbrain import store
from gradbrain.power.cell import run_cell
from gradbrain.power.figure import operating_points, power_figure
from gradbrain.power.rates import power_table


def write_cell(cell: dict[str, Any], feature_paths: dict[str, str], config: dict[str, Any], out: str | Path) -> Path:
    """Rule power_cell: one cell's per-subject values as CSV (written atomically)."""
    return store.write_table(run_cell(cell, feature_paths, config), out)


def power_outputs(
    cell_files: Iterable[str],
    scores_csv: str | None,
    encoding_files: Iterable[str],
    power: dict[str, Any],
    datasets: dict[str, dict[str, Any]],
    outputs,
) -> None:
    """Rule power: power.csv, the operating points of the real data and the curves."""
    table = power_table((pd.read_csv(f) for f in cell_files), power)
    points = operating_points(scores_csv, encoding_files, datasets)
    store.write_table(table, outputs.table)
    store.write_table(points, outputs.operating_points)
    power_figure(table, points, outputs.figure)
