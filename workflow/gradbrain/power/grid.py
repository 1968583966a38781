"""The power analysis' grid (no heavy imports: read when the DAG is built): one cell per model x modality x
scenario x noise x image count, and the ``power`` keys each cell depends on."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gradbrain.simulation.scenarios import BRAINS, driver_kinds

CELL_KEYS = (
    "seeds", "seed", "n_subjects", "drivers", "own_contribution", "partition", "preprocessing", "hierarchy",
)  # fmt: skip
"""The ``power`` keys a grid cell's numbers depend on (the rest only choose cells or aggregate them)."""


def cells(power: dict[str, Any], models: Iterable[str]) -> list[dict[str, Any]]:
    """Every grid cell of the ``power`` config: model x modality x scenario x noise x image count."""
    models = list(models)
    drivers = power.get("drivers", "own")
    named = {"power.models": power.get("models") or [], "power.drivers": [] if drivers == "own" else drivers}
    for key, names in named.items():
        unknown = [m for m in names if m not in models]
        if unknown:
            raise ValueError(
                f"{key}: {unknown} are not under models ({', '.join(models)}); "
                "add them there or drop them from the power config"
            )
    out = []
    for model in power.get("models") or models:
        for modality in power["modalities"]:
            for scenario in power["scenarios"]:
                drivers = driver_names(power, model, scenario, models)
                for noise in power["noise"][modality]:
                    for n in power["n_images"]:
                        out.append(
                            {
                                "model": model,
                                "modality": modality,
                                "scenario": scenario,
                                "noise": float(noise),
                                "n_images": int(n),
                                "drivers": drivers,
                            }
                        )
    return out


def simulation_block(modality: str) -> str:
    """The ``simulation`` section whose brain a modality's cells record: eeg records the MEG brain (the planted
    latencies and sources of ``simulation.meg``) with THINGS-EEG2's design."""
    return "meg" if modality == "eeg" else modality


def cell_name(cell: dict[str, Any]) -> str:
    """Relative path of a cell's table: ``{model}/{modality}/{scenario}/noise-{noise}_images-{n}.csv``."""
    return (
        f"{cell['model']}/{cell['modality']}/{cell['scenario']}/"
        f"noise-{float(cell['noise']):g}_images-{int(cell['n_images'])}.csv"
    )


def driver_names(
    power: dict[str, Any], model: str, scenario: str = "forward_only", models: Iterable[str] = ()
) -> list[str]:
    """The models whose features drive the simulated brain of ``model``'s cell of ``scenario``.

    ``power.drivers``: ``own`` (the analysed model) or a list of models. A scenario driven by other models
    (``simulation.scenarios.BRAINS``) takes, of those (of every model under ``models`` with ``own``), the ones that
    are not the analysed model (``other``), or the analysed model and them (``mixture``).
    """
    drivers = power.get("drivers", "own")
    base = [model] if drivers == "own" else list(drivers)
    how = BRAINS[scenario].drivers
    if how == "study":
        return base
    others = [m for m in (models if drivers == "own" else base) if m != model]
    if not others:
        raise ValueError(
            f"power.scenarios: {scenario} is driven by other models than the analysed one, and {model} has none "
            f"(models: {list(models)}, power.drivers: {drivers}); add a model under models or drop {scenario}"
        )
    return others if how == "other" else [model, *others]


def power_kinds(power: dict[str, Any]) -> tuple[str, ...]:
    """Feature kinds the power analysis extracts and analyses: activations, gradients and the error kind of every
    learning-rule scenario in the grid (``feedback_alignment``)."""
    return driver_kinds(power.get("scenarios", []))
