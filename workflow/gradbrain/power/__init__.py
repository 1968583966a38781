"""Power of the study's tests: how often each test reaches the verdict planted in a simulated brain (issue 9).

A grid cell is (model, modality, scenario, noise, image count). In a cell the brain of ``seeds`` x ``max(n_subjects)``
subjects is simulated in memory with the planted-study code (``simulate.meg_evoked`` / ``simulate.fmri_signal``,
the same noise model, the THINGS-MEG loader's time operator), encoded with the stage's cross-validated ridge from
the model's pooled features of every layer (and of every layer's own contribution), and scored by the hierarchy
stage's own functions (``scores.meg_metrics`` etc.) on small stores in the stage's formats. Seeds vary the brain
(read-out weights, topographies, noise); the stimuli are the first ``n_images`` crops of one seeded set, so the
features and folds are shared and each layer needs one set of fold SVDs for all the cell's subjects.

``power_table`` turns the per-subject values of every cell into rates: per-subject permutation tests (p < alpha
with the claimed sign), per-subject thresholds (``scores.EXPECTATIONS`` and their robust analogues) and group
Wilcoxon tests over groups of k subjects drawn from all of the cell's subjects (``group_draws``). Each rate carries
``planted``: ``effect`` (the claim is true in the scenario: a power), ``no_effect`` (false: a false-positive rate) or
``unknown`` (the scenario does not decide it).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradbrain import stats, store
from gradbrain.data.things_meg.layout import EPOCHS
from gradbrain.data.things_meg.read import time_operator
from gradbrain.encoding.contributions import own_contributions
from gradbrain.encoding.cv import CrossValidatedRidge, make_folds
from gradbrain.encoding.stage import alpha_grid
from gradbrain.features.kinds import BASE_KINDS
from gradbrain.hierarchy import stage as scores
from gradbrain.simulation import study as S
from gradbrain.simulation.photos import PHOTOGRAPHS, crops
from gradbrain.simulation.scenarios import driver_kinds

log = logging.getLogger(__name__)
CELL_COLUMNS = ["model", "modality", "scenario", "noise", "n_images", "seed", "subject", "kind", "metric", "value"]
POWER_COLUMNS = [
    "model",
    "modality",
    "scenario",
    "noise",
    "n_images",
    "n_subjects",
    "test",
    "kind",
    "metric",
    "claim",
    "planted",
    "rate",
    "n_runs",
    "mean_value",
    "observed_r",
    "observed_r_gradients",
]

# Planted sign of each (kind, metric family) per scenario: +1 / -1 an effect of that sign, 0 no effect (any claim is
# false), None not decided by the scenario. A family covers the paper's metric and its robust variants.
PLANTED = {
    "backprop": {
        ("activations", "spatial_score"): 1, ("activations", "temporal_score"): 1,
        ("gradients", "spatial_score"): 1, ("gradients", "voxel_agreement"): 1, ("gradients", "temporal_score"): -1,
        ("gradients", "spatial_divergence"): 0, ("gradients", "temporal_divergence"): 0,
    },
    "misaligned": {
        ("activations", "spatial_score"): 1, ("activations", "temporal_score"): 1,
        ("gradients", "temporal_score"): 1, ("gradients", "spatial_divergence"): 1,
        ("gradients", "temporal_divergence"): 1,
    },
    "forward_only": {
        ("activations", "spatial_score"): 1, ("activations", "temporal_score"): 1,
        ("gradients", "spatial_score"): 0, ("gradients", "voxel_agreement"): 0, ("gradients", "temporal_score"): 0,
    },
    "feedback_alignment": {  # organised as backprop, with the feedback-alignment errors in place of the gradients
        ("activations", "spatial_score"): 1, ("activations", "temporal_score"): 1,
        ("feedback_alignment", "spatial_score"): 1, ("feedback_alignment", "voxel_agreement"): 1,
        ("feedback_alignment", "temporal_score"): -1, ("feedback_alignment", "spatial_divergence"): 0,
        ("feedback_alignment", "temporal_divergence"): 0,
    },
}  # fmt: skip
FAMILIES = (
    "spatial_score",
    "voxel_agreement",
    "spatial_divergence",
    "temporal_score",
    "temporal_divergence",
    "after_forward_fraction",
)
SUFFIXES = ("", "_centroid", "_own", "_own_centroid")
CELL_KEYS = ("seeds", "seed", "n_subjects", "drivers", "own_contribution", "preprocessing", "hierarchy")
"""The ``power`` keys a grid cell's numbers depend on (the rest only choose cells or aggregate them)."""
SIGNED_FAMILIES = FAMILIES[:-1]  # group-tested against 0; a fraction of layers in [0, 1] has no sign to test


# ------------------------------------------------------------------------------------------------------ the grid
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
                for noise in power["noise"][modality]:
                    for n in power["n_images"]:
                        out.append(
                            {
                                "model": model,
                                "modality": modality,
                                "scenario": scenario,
                                "noise": float(noise),
                                "n_images": int(n),
                            }
                        )
    return out


def cell_name(cell: dict[str, Any]) -> str:
    """Relative path of a cell's table: ``{model}/{modality}/{scenario}/noise-{noise}_images-{n}.csv``."""
    return (
        f"{cell['model']}/{cell['modality']}/{cell['scenario']}/"
        f"noise-{float(cell['noise']):g}_images-{int(cell['n_images'])}.csv"
    )


def driver_names(power: dict[str, Any], model: str) -> list[str]:
    """The models whose features drive the simulated brain of ``model``'s cells (``power.drivers``)."""
    drivers = power.get("drivers", "own")
    return [model] if drivers == "own" else list(drivers)


# -------------------------------------------------------------------------------------------------- the features
def power_kinds(power: dict[str, Any]) -> tuple[str, ...]:
    """Feature kinds the power analysis extracts and analyses: activations, gradients and the error kind of every
    learning-rule scenario in the grid (``feedback_alignment``)."""
    return driver_kinds(power.get("scenarios", []))


def extract_power_features(
    out: str | Path,
    model,
    n_images: int,
    image_size: int,
    seed: int,
    batch_size: int = 100,
    device: str = "cpu",
    kinds: Iterable[str] = BASE_KINDS,
    rule_seed: int = 0,
    sketch_size: int = 16,
) -> Path:
    """Pooled features of every sampled layer on ``n_images`` seeded crops, one zarr store: activations, gradients
    and any learning-rule kind (its feedback matrices seeded by ``rule_seed``, as in the study's extraction)."""
    from gradbrain.features.extract import extract_arrays
    from gradbrain.features.objectives import make_objective

    images, _ = crops(int(n_images), int(image_size), seed=int(seed))
    arrays = extract_arrays(
        model,
        make_objective(model, names=list(PHOTOGRAPHS)),
        images,
        batch_size,
        device,
        kinds=tuple(kinds),
        rule_seed=int(rule_seed),
        sketch_size=int(sketch_size),
    )
    with store.atomic_group(out) as group:
        for kind, layers in arrays.items():
            for k, layer in enumerate(layers):
                store.write_array(group, f"{kind}/{k:02d}", layer.astype(np.float32))
        group.attrs.update(
            {
                "model": model.spec["name"],
                "depths": list(model.depths),
                "layers": list(model.layer_names),
                "n_images": int(n_images),
                "image_size": int(image_size),
                "seed": int(seed),
                "kinds": list(arrays),
            }
        )
    return Path(out)


def load_power_features(path: str | Path, n_images: int) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    """Depths and, per kind, the first ``n_images`` rows of every layer's features."""
    group = store.open_group(path)
    if int(group.attrs["n_images"]) < n_images:
        raise ValueError(
            f"{path} has {group.attrs['n_images']} images, a cell asks for {n_images}: "
            "raise power.n_images' maximum or delete the store so power_features reruns"
        )
    depths = np.asarray(group.attrs["depths"], dtype=float)
    feats = {
        kind: [np.asarray(group[f"{kind}/{k:02d}"][:n_images], dtype=np.float32) for k in range(len(depths))]
        for kind in group.attrs["kinds"]
    }
    return depths, feats


def make_drivers(
    features: dict[str, tuple[np.ndarray, dict[str, list[np.ndarray]]]], components: int
) -> list[S.DriverFeatures]:
    """Driver features as ``simulate_stimuli`` makes them: every layer's top principal components, whitened."""
    out = []
    for name, (depths, feats) in features.items():
        white = {kind: [S.whiten(x, components) for x in layers] for kind, layers in feats.items()}
        out.append(S.DriverFeatures(name, depths, white.pop("activations"), white.pop("gradients"), extra=white))
    return out


# ------------------------------------------------------------------------------------------- in-memory brains
def subject_rng(seed: int, run: int, subject: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(run), int(subject)])


def meg_time_operator(preprocessing: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The THINGS-MEG loader's low-pass, resampling and crop of the simulated epochs, and the analysed times."""
    return _time_operator(
        preprocessing.get("lowpass", 20.0),
        preprocessing.get("sfreq", 30.0),
        preprocessing.get("tmin"),
        preprocessing.get("tmax"),
    )


@functools.lru_cache(maxsize=8)
def _time_operator(lowpass, sfreq, tmin, tmax) -> tuple[np.ndarray, np.ndarray]:
    return time_operator(EPOCHS.times, EPOCHS.sfreq, lowpass, sfreq, tmin, tmax)


def meg_targets(
    drivers: list[S.DriverFeatures],
    scenario: str,
    cfg: dict[str, Any],
    preprocessing: dict[str, Any],
    rng: np.random.Generator,
    operator: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One simulated subject's prepared MEG targets: (n_images, n_times * n_channels) time-major, times, n_channels.

    One trial per image as in THINGS-MEG's exp trials: the planted evoked response plus temporally smoothed sensor
    noise (SD ``cfg['noise']``) at THINGS-MEG's 200 Hz, then the loader's low-pass, resampling and crop
    (``things_meg.read.time_operator``) and a z-score of every channel and time over images, as ``prepare_meg`` does.
    """
    n_ch = len(S.spread_channels(int(cfg["n_sensors"])))
    evoked = S.meg_evoked(scenario, drivers, cfg, EPOCHS.times, n_ch, rng)
    evoked += float(cfg["noise"]) * S._smooth_noise(rng, evoked.shape, float(cfg["noise_smooth"]))
    operator, times = operator or meg_time_operator(preprocessing)
    y = evoked[..., operator] if operator.ndim == 1 else np.tensordot(evoked, operator, axes=([2], [0]))
    y = (y - y.mean(0)) / np.where(y.std(0) > 0, y.std(0), 1)
    return y.transpose(0, 2, 1).reshape(len(y), -1).astype(np.float32), np.asarray(times), n_ch


def fmri_layout(cfg: dict[str, Any]) -> dict[str, Any]:
    """Voxels of the simulated ROI layout: ROI index, ROI name, hemisphere and distance (mm) from V1's centroid."""
    vol, rois, affine = S.roi_layout(cfg)
    ijk = np.argwhere(vol >= 0)
    roi_of = vol[tuple(ijk.T)]
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    hemi = np.where(ijk[:, 0] < 1 + (vol.shape[0] - 2) // 2, "lh", "rh")
    names = np.array([rois[r]["name"] for r in roi_of])
    if "V1" not in names:
        raise ValueError("simulation.fmri.rois: distance_v1 needs an ROI named V1")
    distance = np.zeros(len(ijk))
    for side in ("lh", "rh"):
        rows = hemi == side
        centroid = xyz[rows & (names == "V1")].mean(0)
        distance[rows] = np.linalg.norm(xyz[rows] - centroid, axis=1)
    return {
        "rois": rois,
        "roi_of": roi_of,
        "roi": names,
        "hemi": hemi,
        "distance_v1": distance,
        "ijk": ijk,
        "coords_mm": xyz,
    }


def fmri_targets(
    drivers: list[S.DriverFeatures],
    scenario: str,
    cfg: dict[str, Any],
    layout: dict[str, Any],
    rng: np.random.Generator,
) -> np.ndarray:
    """One simulated subject's prepared fMRI targets (n_images, n_voxels): the planted signal plus Gaussian noise
    (SD ``cfg['noise']``) per repeat, each repeat z-scored per voxel (the per-session z-score of the betas), averaged
    over ``cfg['repeats']`` repeats."""
    signal = S.fmri_signal(scenario, drivers, layout["rois"], layout["roi_of"], cfg, rng)
    total = np.zeros(signal.shape)
    for _ in range(int(cfg["repeats"])):
        trial = signal + float(cfg["noise"]) * rng.standard_normal(signal.shape)
        total += (trial - trial.mean(0)) / trial.std(0)
    return (total / int(cfg["repeats"])).astype(np.float32)


# ------------------------------------------------------------------------------------------------ one grid cell
class MemoryGroup(dict):
    """An in-memory stand-in for a zarr group as the hierarchy stage reads it: arrays (and subgroups) by path,
    and ``attrs``. Saves the zarr round trip per simulated subject; the stage's functions run unchanged."""

    def __init__(self, arrays: dict[str, Any] | None = None, attrs: dict[str, Any] | None = None):
        super().__init__()
        self.attrs = dict(attrs or {})
        for path, value in (arrays or {}).items():
            self[path] = value

    def __setitem__(self, path: str, value: Any) -> None:
        head, _, rest = path.partition("/")
        if rest:
            self.setdefault(head, MemoryGroup())[rest] = value
        else:
            super().__setitem__(head, value if isinstance(value, MemoryGroup) else np.asarray(value))

    def __getitem__(self, path: str) -> Any:
        head, _, rest = path.partition("/")
        return super().__getitem__(head)[rest] if rest else super().__getitem__(head)

    def __contains__(self, path: object) -> bool:
        try:
            self[path]  # type: ignore[index]
        except (KeyError, TypeError):
            return False
        return True


def subject_stores(
    name: str,
    r: dict[str, np.ndarray],
    layers: list[str],
    depths: np.ndarray,
    n_train: int,
    brain_attrs: dict[str, Any],
    targets: dict[str, np.ndarray],
    kinds: tuple[str, ...] = BASE_KINDS,
) -> scores.Fit:
    """Encoding and brain stores of one simulated subject in the hierarchy stage's layout, in memory."""
    enc = MemoryGroup(
        {key: values.astype(np.float32) for key, values in r.items()},
        {"layers": layers, "relative_depths": depths.tolist(), "kinds": list(kinds), "n_train": int(n_train)},
    )
    brain = MemoryGroup({f"targets/{key}": values for key, values in targets.items()}, brain_attrs)
    return scores.Fit("power", "model", name, enc, brain)


def subject_metrics(fit: scores.Fit, modality: str, hierarchy: dict[str, Any]) -> list[tuple]:
    """Every per-subject metric of the hierarchy stage (the paper's and the robust estimators) for one fit."""
    extra = scores.new_extra()
    if modality == "fmri":
        return scores.fmri_metrics(fit, hierarchy, extra) + scores.robust_fmri_metrics(fit, hierarchy)
    return scores.meg_metrics(fit, hierarchy, extra) + scores.robust_meg_metrics(fit, hierarchy)


def run_cell(cell: dict[str, Any], feature_paths: dict[str, str], config: dict[str, Any]) -> pd.DataFrame:
    """Per (seed, subject, kind, metric) values of one grid cell (columns ``CELL_COLUMNS``).

    ``config`` holds the workflow's ``simulation``, ``encoding``, ``hierarchy`` and ``power`` sections.
    """
    power, encoding = config["power"], config["encoding"]
    hierarchy = {**config["hierarchy"], **power.get("hierarchy", {})}
    modality, scenario, n = cell["modality"], cell["scenario"], int(cell["n_images"])
    sim = {
        "image_size": config["simulation"].get("image_size", 64),
        **config["simulation"][modality],
        "noise": float(cell["noise"]),
    }
    loaded = {m: load_power_features(feature_paths[m], n) for m in {cell["model"], *driver_names(power, cell["model"])}}
    depths, feats = loaded[cell["model"]]
    drivers = make_drivers(
        {m: loaded[m] for m in driver_names(power, cell["model"])},
        int(config["simulation"].get("readout_components", 64)),
    )
    alphas = alpha_grid(encoding)
    solver = {k: encoding[k] for k in ("backend", "device", "dtype")}
    kinds = tuple(feats)  # every kind of the features store (power_kinds of the grid)
    maps = {"r": feats} | (
        {"r_own": {kind: own_contributions(feats[kind], kind, alphas, **solver) for kind in kinds}}
        if power.get("own_contribution", False)
        else {}
    )
    folds = make_folds(n, int(encoding["folds"]), int(encoding["seed"]))
    n_subjects = max(int(k) for k in power["n_subjects"])
    layers = [f"layer{k:02d}" for k in range(len(depths))]
    layout = fmri_layout(sim) if modality == "fmri" else None
    operator = meg_time_operator(power.get("preprocessing", {})) if modality == "meg" else None
    subjects = [(run, subject) for run in range(int(power["seeds"])) for subject in range(1, n_subjects + 1)]
    if modality == "meg":
        channels = np.array(S.spread_channels(int(sim["n_sensors"])))
        attrs = {"modality": "meg", "n_channels": len(channels), "n_times": len(operator[1])}
        targets = {"time": np.asarray(operator[1], dtype=np.float32), "channel": channels}
        Ys = [
            meg_targets(drivers, scenario, sim, {}, subject_rng(power["seed"], run, subject), operator)[0]
            for run, subject in subjects
        ]
    else:
        attrs = {"modality": "fmri"}
        targets = {k: layout[k] for k in ("distance_v1", "roi", "hemi", "ijk", "coords_mm")}
        Ys = [
            fmri_targets(drivers, scenario, sim, layout, subject_rng(power["seed"], run, subject))
            for run, subject in subjects
        ]
    # every seed's subjects side by side: each layer's fold SVDs are computed once per cell
    Y, width = np.concatenate(Ys, axis=1), Ys[0].shape[1]
    del Ys
    r = {
        f"{m}/{kind}": np.stack(
            [
                CrossValidatedRidge(X, folds, alphas, **solver, target_batch=encoding.get("target_batch")).score(Y)[0]
                for X in fs[kind]
            ]
        )
        for m, fs in maps.items()
        for kind in kinds
    }
    log.info("%s: %d subjects encoded", cell_name(cell), len(subjects))
    rows = []
    for i, (run, subject) in enumerate(subjects):
        cols = slice(i * width, (i + 1) * width)
        fit = subject_stores(
            f"{run}-{subject}", {k: v[:, cols] for k, v in r.items()}, layers, depths, n, attrs, targets, kinds
        )
        for _, _, _, kind, metric, value in subject_metrics(fit, modality, hierarchy):
            rows.append((cell["model"], modality, scenario, float(cell["noise"]), n, run, subject, kind, metric, value))
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


# --------------------------------------------------------------------------------------------------- the rates
def _family(metric: str) -> tuple[str, str] | None:
    """(family, suffix) of a metric name of the tables, or None for auxiliary rows."""
    for family in FAMILIES:
        for suffix in SUFFIXES:
            if metric == family + suffix:
                return family, suffix
    return None


def planted_label(scenario: str, kind: str, family: str, sign: int) -> str:
    """``effect``, ``no_effect`` or ``unknown`` for the claim 'the family's value has ``sign``' in ``scenario``."""
    truth = PLANTED.get(scenario, {}).get((kind, family))
    if truth is None:
        return "unknown"
    return "effect" if truth == sign else "no_effect"


def thresholds() -> list[tuple[str, str, str, float]]:
    """Every per-subject threshold of ``scores.EXPECTATIONS`` with its robust analogues, deduplicated."""
    out = {}
    for expectations in scores.EXPECTATIONS.values():
        for kind, metric, op, value in expectations:
            found = _family(metric)
            suffixes = SUFFIXES if found else ("",)
            for suffix in suffixes:
                out[(kind, metric + suffix, op, value)] = None
    return list(out)


def _threshold_planted(scenario: str, kind: str, metric: str, op: str, value: float) -> str:
    found = _family(metric)
    base = found[0] if found else metric
    if (kind, base, op, value) in scores.EXPECTATIONS.get(scenario, []):
        return "effect"
    if found:
        truth = PLANTED.get(scenario, {}).get((kind, found[0]))
        claimed = 1 if op == ">=" and value > 0 else -1 if op == "<=" and value < 0 else None
        if truth is not None and claimed is not None and truth != claimed:
            return "no_effect"
        if truth is not None and truth == claimed:
            return "effect"
    return "unknown"


def group_draws(values: np.ndarray, k: int, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Wilcoxon p and mean of ``draws`` groups of ``k`` subjects drawn without replacement from a cell's pool.

    The pool is every seed's subjects with a finite value (as ``stats.group_test`` drops the others); they are
    exchangeable (each an independent brain and noise draw on the same images), so random groups estimate the rate
    of the group test far better than one group per seed would. Empty arrays when the pool has fewer than k.
    """
    pool = np.asarray(values, dtype=float)
    pool = pool[np.isfinite(pool)]
    if k < 1 or len(pool) < k or draws < 1:
        return np.array([]), np.array([])
    rng = np.random.default_rng([seed, len(pool), k])
    groups = pool[np.argsort(rng.random((draws, len(pool))), axis=1)[:, :k]]
    p = stats.signed_rank_p(groups)
    return p, groups.mean(1)


def power_table(cell_tables: Iterable[pd.DataFrame], power: dict[str, Any]) -> pd.DataFrame:
    """Rates of every test per grid cell (columns ``POWER_COLUMNS``); see the module docstring."""
    alpha = float(power.get("alpha", 0.05))
    out = []
    for frame in cell_tables:
        if frame.empty:
            continue
        key = {c: frame[c].iloc[0] for c in ("model", "modality", "scenario", "noise", "n_images")}
        scenario = key["scenario"]
        wide = frame.pivot_table(index=["seed", "subject", "kind"], columns="metric", values="value", aggfunc="first")
        r_metric = "peak_r" if key["modality"] == "meg" else "best_r_median"
        observed = {
            kind: float(wide.xs(kind, level="kind")[r_metric].mean())
            if kind in wide.index.get_level_values("kind")
            else math.nan
            for kind in BASE_KINDS
        }

        def add(n_subjects, test, kind, metric, claim, planted, hits, values, key=key, observed=observed):
            hits, values = np.asarray(hits, dtype=float), np.asarray(values, dtype=float)
            out.append(
                {
                    **key,
                    "n_subjects": n_subjects,
                    "test": test,
                    "kind": kind,
                    "metric": metric,
                    "claim": claim,
                    "planted": planted,
                    "rate": float(np.mean(hits)) if len(hits) else math.nan,
                    "n_runs": len(hits),
                    "mean_value": float(np.nanmean(values)) if np.isfinite(values).any() else math.nan,
                    "observed_r": observed["activations"],
                    "observed_r_gradients": observed["gradients"],
                }
            )

        for kind in wide.index.get_level_values("kind").unique():
            sub = wide.xs(kind, level="kind")
            for metric in sub.columns:
                found = _family(metric)
                if not found or f"{metric}_p" not in sub.columns or sub[metric].isna().all():
                    continue
                values, p = sub[metric].to_numpy(float), sub[f"{metric}_p"].to_numpy(float)
                groups = {
                    int(k): group_draws(values, int(k), int(power.get("group_draws", 1000)), int(power.get("seed", 0)))
                    for k in power["n_subjects"]
                    if found[0] in SIGNED_FAMILIES
                }
                for sign, claim in ((1, "> 0"), (-1, "< 0")):
                    planted = planted_label(scenario, kind, found[0], sign)
                    add(1, "permutation", kind, metric, claim, planted, (p < alpha) & (np.sign(values) == sign), values)
                    for k, (p_group, means) in groups.items():
                        add(
                            k,
                            "wilcoxon",
                            kind,
                            metric,
                            claim,
                            planted,
                            (p_group < alpha) & (np.sign(means) == sign),
                            means,
                        )
            for t_kind, metric, op, value in thresholds():
                if t_kind != kind or metric not in sub.columns or sub[metric].isna().all():
                    continue
                values = sub[metric].to_numpy(float)
                hits = values >= value if op == ">=" else values <= value
                add(
                    1,
                    "threshold",
                    kind,
                    metric,
                    f"{op} {value:g}",
                    _threshold_planted(scenario, kind, metric, op, value),
                    hits,
                    values,
                )
    return pd.DataFrame(out, columns=POWER_COLUMNS)


# ------------------------------------------------------------------------------------- real data and the figure
def operating_points(
    scores_csv: str | Path | None, encoding_files: Iterable[str | Path], datasets: dict[str, dict[str, Any]]
) -> pd.DataFrame:
    """The real datasets' observed activation r (MEG peak r, fMRI median best r over subjects), image count
    (median training images of their encoding stores) and subject count."""
    cols = ["dataset", "modality", "observed_r", "n_images", "n_subjects"]
    real = {name: ds for name, ds in datasets.items() if not ds.get("simulated")}
    if not real or not scores_csv or not Path(scores_csv).exists():
        return pd.DataFrame(columns=cols)
    table = pd.read_csv(scores_csv)
    n_train: dict[str, list[int]] = {}
    for path in encoding_files:
        n_train.setdefault(Path(path).parts[-3], []).append(int(store.open_group(path).attrs["n_train"]))
    out = []
    for name, ds in real.items():
        metric = "peak_r" if ds["modality"] == "meg" else "best_r_median"
        sel = table[(table.dataset == name) & (table.kind == "activations") & (table.metric == metric)]
        if sel.empty:
            continue
        counts = n_train.get(name, [])
        out.append(
            {
                "dataset": name,
                "modality": ds["modality"],
                "observed_r": float(sel.value.median()),
                "n_images": int(np.median(counts)) if counts else math.nan,
                "n_subjects": len(ds.get("subjects", [])),
            }
        )
    return pd.DataFrame(out, columns=cols)


FIGURE_TESTS = {  # (modality: kind, metric, claim, test) drawn on the curves; group tests at the largest group
    "meg": [
        ("activations", "temporal_score", "> 0", "permutation"),
        ("gradients", "temporal_score", "< 0", "permutation"),
        ("gradients", "temporal_score_centroid", "< 0", "permutation"),
        ("gradients", "temporal_score_own_centroid", "< 0", "permutation"),
        ("gradients", "temporal_divergence", "> 0", "permutation"),
        ("gradients", "temporal_score_centroid", "< 0", "wilcoxon"),
    ],
    "fmri": [
        ("activations", "spatial_score", "> 0", "permutation"),
        ("gradients", "spatial_score", "> 0", "permutation"),
        ("gradients", "voxel_agreement", "> 0", "permutation"),
        ("gradients", "spatial_divergence", "> 0", "permutation"),
        ("gradients", "spatial_score_own", "> 0", "permutation"),
        ("gradients", "spatial_score", "> 0", "wilcoxon"),
    ],
}


def power_figure(table: pd.DataFrame, points: pd.DataFrame, out: str | Path) -> Path:
    """Power curves: per model and modality (rows) and scenario (columns), the rate of each headline permutation
    test, and of the group test at the largest group size, against the observed activation r, one line per image
    count; dashed where the claim is planted false; the real data's observed r marked by a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    largest = table.loc[table.test == "wilcoxon", "n_subjects"].max() if (table.test == "wilcoxon").any() else 0
    table = table[(table.test == "permutation") | ((table.test == "wilcoxon") & (table.n_subjects == largest))]
    panels = [(m, mod) for m in table.model.unique() for mod in table.modality.unique()]
    scenarios = list(table.scenario.unique())
    fig, axes = plt.subplots(
        max(len(panels), 1),
        max(len(scenarios), 1),
        squeeze=False,
        figsize=(4 * max(len(scenarios), 1), 3 * max(len(panels), 1)),
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (model, modality) in enumerate(panels):
        for j, scenario in enumerate(scenarios):
            ax = axes[i][j]
            sel = table[(table.model == model) & (table.modality == modality) & (table.scenario == scenario)]
            for c, (kind, metric, claim, test) in enumerate(FIGURE_TESTS.get(modality, [])):
                rows = sel[(sel.kind == kind) & (sel.metric == metric) & (sel.claim == claim) & (sel.test == test)]
                group = f", group of {largest}" if test == "wilcoxon" else ""
                for n_images, line in rows.groupby("n_images"):
                    line = line.sort_values("observed_r")
                    style = "--" if (line.planted == "no_effect").any() else "-"
                    ax.plot(
                        line.observed_r,
                        line.rate,
                        style,
                        marker="o",
                        ms=3,
                        color=colours[c % len(colours)],
                        alpha=0.4 + 0.6 * (n_images / sel.n_images.max()),
                        lw=2.5 if test == "wilcoxon" else 1.5,
                        label=f"{kind[0]} {metric} {claim}{group}" if n_images == sel.n_images.max() else None,
                    )
            for point in points[points.modality == modality].itertuples():
                ax.axvline(point.observed_r, color="k", lw=0.8)
                ax.text(
                    point.observed_r,
                    1.02,
                    f"{point.dataset}: {point.n_images} img, {point.n_subjects} sub",
                    fontsize=6,
                    rotation=90,
                    va="bottom",
                )
            ax.axhline(0.8, color="grey", lw=0.5, ls=":")
            ax.axhline(0.05, color="grey", lw=0.5, ls=":")
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlim(left=0)
            ax.set_title(f"{model} {modality} {scenario}", fontsize=8)
            ax.set_xlabel("observed r (activations)", fontsize=7)
            ax.set_ylabel("rate p < alpha", fontsize=7)
            if j == 0:
                ax.legend(fontsize=5, loc="best")
    fig.suptitle(
        "per-subject permutation tests and (thick) the group test at the largest group\none line per image "
        "count (lighter: fewer images), points: noise levels\ndashed: claim planted false (false-positive "
        "rate)",
        fontsize=8,
    )
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------------------------- rule entries
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
