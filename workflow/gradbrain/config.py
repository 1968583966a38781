"""The workflow config before schema validation: ``--config`` values typed as the schema declares, unknown keys named.

Read when the DAG is built (``workflow/rules/common.smk``), so it imports only the standard library and yaml.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

SAME_KEYS = {"models.<name>.demo_training": "demo_training", "power.hierarchy": "hierarchy"}
"""Sections that override another section key by key, and so take that section's keys."""

_IS_TYPE = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def load_schema(path: str | Path) -> dict[str, Any]:
    """The config schema (workflow/schemas/config.schema.yaml)."""
    with open(path) as fh:
        return yaml.safe_load(fh)


def read_yaml(path: str | Path) -> Any:
    """The content of a YAML file; a syntax error names the file, line and column (Snakemake's "not valid JSON or
    YAML" names neither)."""
    try:
        with open(path) as fh:
            return yaml.safe_load(fh)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        context = f" ({err.context}, line {err.context_mark.line + 1})" if err.context and err.context_mark else ""
        raise ValueError(
            f"{where}: {err.problem}{context}. Fix the YAML there: the keys of one section are indented by the same "
            "number of spaces (no tabs)"
        ) from None


def _branches(node: dict, schema: dict) -> list[dict]:
    """``node`` and every subschema that may also describe its value: ``$ref`` targets (``#/...`` pointers) and the
    branches of allOf, anyOf, oneOf and then."""
    out, todo = [], [node]
    while todo:
        current = todo.pop()
        if not isinstance(current, dict):
            continue
        out.append(current)
        if "$ref" in current:
            target = schema
            for part in current["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            todo.append(target)
        for key in ("allOf", "anyOf", "oneOf"):
            todo.extend(current.get(key, []))
        todo.append(current.get("then"))
    return out


def _types(nodes: list[dict]) -> set[str]:
    types: set[str] = set()
    for node in nodes:
        declared = node.get("type", [])
        types.update([declared] if isinstance(declared, str) else declared)
    return types


def _child(nodes: list[dict], key: str) -> list[dict]:
    """The subschemas of ``key`` inside an object described by ``nodes``: its properties, else the map's values."""
    found = [n["properties"][key] for n in nodes if key in n.get("properties", {})]
    return found or [n["additionalProperties"] for n in nodes if isinstance(n.get("additionalProperties"), dict)]


def _parse(text: str, types: set[str]) -> Any:
    """``text`` read as YAML when that gives a value of one of ``types`` other than a string (``1e-3`` as a
    float), or any value where the schema declares no type (a catalogue key such as ``kwargs``)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if not types or (not isinstance(value, str) and any(_IS_TYPE[t](value) for t in types if t in _IS_TYPE)):
        return value
    if "number" in types:
        try:
            return float(text)
        except ValueError:
            pass
    return text


def coerce(value: Any, nodes: list[dict], schema: dict) -> Any:
    """``value`` with every string that the schema types otherwise read as YAML, recursively."""
    nodes = [b for n in nodes for b in _branches(n, schema)]
    if isinstance(value, str):
        value = _parse(value, _types(nodes))
    if isinstance(value, dict):
        return {k: coerce(v, _child(nodes, k), schema) for k, v in value.items()}
    if isinstance(value, list):
        return [coerce(v, [n["items"] for n in nodes if isinstance(n.get("items"), dict)], schema) for v in value]
    return value


def typed_overrides(overrides: Mapping[str, Any], schema: dict) -> dict[str, Any]:
    """The ``--config`` values with the types the schema declares.

    Snakemake reads a nested ``--config`` value with YAML's BaseLoader, which leaves every scalar a string
    (``encoding={folds: 10}`` gives ``{'folds': '10'}``); each such string is read as YAML again where the schema
    expects an integer, number, boolean, null, list or object.
    """
    return coerce(dict(overrides), [schema], schema)


def closest(key: str, known: Iterable[str]) -> str | None:
    """The known name closest to ``key`` (difflib), or None when none is close."""
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return close[0] if close else None


def _unknown(
    value: Any, nodes: list[dict], schema: dict, path: str, generic: str, model_keys: set[str]
) -> Iterator[str]:
    nodes = [b for n in nodes for b in _branches(n, schema)]
    if isinstance(value, list):
        items = [n["items"] for n in nodes if isinstance(n.get("items"), dict)]
        for i, item in enumerate(value if items else []):
            yield from _unknown(item, items, schema, f"{path}[{i}]", f"{generic}[]", model_keys)
        return
    if not isinstance(value, dict) or ("object" not in _types(nodes) and not any("properties" in n for n in nodes)):
        return
    if generic in SAME_KEYS:
        nodes += _branches(schema["properties"][SAME_KEYS[generic]], schema)
    known = {k for n in nodes for k in n.get("properties", {})} | (model_keys if generic == "models.<name>" else set())
    is_map = any(isinstance(n.get("additionalProperties"), dict) for n in nodes)
    for key, item in value.items():
        full = f"{path}.{key}" if path else str(key)
        if key in known or is_map:
            name = key if key in known else "<name>"
            sub = _child(nodes, key)
            yield from _unknown(item, sub, schema, full, f"{generic}.{name}" if generic else name, model_keys)
            continue
        match = closest(str(key), known)
        prefix = f"{path}." if path else ""
        if match:
            hint = f"did you mean '{prefix}{match}'?"
            head, _, rest = str(key).partition(".")
            if rest and head in known:  # encoding.folds: 10
                hint += f" (a nested key is written {head}: {{{rest}: ...}})"
        elif known:
            hint = f"the keys of '{path or 'the config'}' are: {', '.join(sorted(known))}"
        else:
            hint = f"'{path}' takes no keys"
        yield f"config key '{full}' is unknown; {hint}"


def unknown_keys(config: Mapping[str, Any], schema: dict, model_keys: Iterable[str] = ()) -> list[str]:
    """One message per key that neither the schema nor, in a model entry, the catalogue knows (``model_keys``),
    naming the key by its full path and the closest known key (difflib)."""
    return list(_unknown(dict(config), [schema], schema, "", "", set(model_keys)))


def schema_message(error: Any) -> str:
    """One message for a schema violation (the jsonschema ValidationError, or the WorkflowError that Snakemake's
    ``validate`` raises from it): the key's full path and what is wrong. jsonschema's own text appends the whole
    schema; an empty (null) entry that takes a mapping gets what to write instead."""
    found = [e for e in (error, error.__cause__, error.__context__) if hasattr(e, "absolute_path")]
    if not found:
        return str(error)
    error = found[0]
    path = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in error.absolute_path).lstrip(".")
    declared = error.validator_value if error.validator == "type" else None
    if error.instance is None and "object" in ([declared] if isinstance(declared, str) else declared or []):
        name = path.rpartition(".")[2]
        use = "to take its catalogue entry as it is" if path.startswith("models.") else "for its defaults"
        return f"config key '{path}' is empty (null); write `{name}: {{}}` {use}, or remove the key"
    return f"config key '{path or 'the config'}': {error.message}. Every config key is documented in config/README.md."


def check_keys(config: Mapping[str, Any], schema: dict, model_keys: Iterable[str] = ()) -> None:
    """Stop on any unknown key (a misspelt optional key would otherwise be ignored and its default used)."""
    messages = unknown_keys(config, schema, model_keys)
    if messages:
        raise ValueError("\n".join([*messages, "Every config key is documented in config/README.md."]))


def active_rois(rois: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A dataset's ``rois`` without the atlases set to null: Snakemake merges ``--configfile`` files key by key, so
    an overlay (config/overlays/paper_visual.yaml) drops an atlas of the study's config by nulling it."""
    kept = {atlas: names for atlas, names in rois.items() if names is not None}
    if not kept:
        raise ValueError(
            f"{where}: every atlas is null; name at least one atlas and its ROIs (e.g. prf-visualrois: [V1, V2])"
        )
    return kept


def study_block(dataset: Mapping[str, Any]) -> str:
    """The ``simulation`` section whose design a simulated dataset's study has (subjects, images, repeats): ``eeg``
    for format things_eeg2 (analysed as modality meg), else the dataset's modality."""
    return "eeg" if dataset.get("format") == "things_eeg2" else dataset["modality"]
