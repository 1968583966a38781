"""The report's figures come from the hierarchy tables alone: small stores in the real formats go through the
hierarchy stage, the tables are moved to a folder of their own, and every figure and table is drawn from there."""

from __future__ import annotations

import re
import shutil

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from helpers import REPO
from helpers.config import default_config

from gradbrain import store
from gradbrain.data.things_eeg2.layout import CHANNELS as EEG2_CHANNELS
from gradbrain.data.things_meg.layout import channel_names
from gradbrain.hierarchy.stage import Fit, hierarchy_tables
from gradbrain.report import fmri as report_fmri
from gradbrain.report import meg as report_meg
from gradbrain.report import stage as report_stage
from gradbrain.report import style as report_style
from gradbrain.report import surface as report_surface
from gradbrain.report import tables as report_tables
from gradbrain.simulation.brain import spread_channels

KINDS = ["activations", "gradients", "feedback_alignment"]  # a third kind: nothing may assume only two
DEPTHS = [0.0, 1 / 3, 2 / 3, 1.0]
TIMES = np.round(np.arange(-0.1, 0.61, 0.05), 3)
CHANNELS = spread_channels(12)
CFG = {"fdr_alpha": 0.05, "permutations": 20, "bootstraps": 5, "seed": 0, "peak_fraction": 0.95}


def fmri_grid() -> pd.DataFrame:
    """4 x 6 x 2 voxels on an axis-aligned 1.8 mm grid; ROI and best layer rise along j (posterior -> anterior)."""
    i, j, k = (a.ravel() for a in np.meshgrid(np.arange(4), np.arange(6), np.arange(2), indexing="ij"))
    return pd.DataFrame(
        {
            "i": i + 3,
            "j": j + 2,
            "k": k + 5,
            "x_mm": 1.8 * (i + 3) - 5.0,
            "y_mm": 1.8 * (j + 2) - 80.0,
            "z_mm": 1.8 * (k + 5) - 10.0,
            "roi": np.array(["V1", "V1", "V2", "V2", "hV4", "hV4"])[j],
            "hemi": np.where(i < 2, "lh", "rh"),
            "best": np.minimum(j * 4 // 6, 3),
        }
    )


def write_fmri(tmp, subject: int, rng) -> Fit:
    grid = fmri_grid()
    brain = tmp / f"brain_fmri_sub-{subject}.zarr"
    with store.atomic_group(brain) as g:
        t = g.create_group("targets")
        store.write_array(t, "ijk", grid[["i", "j", "k"]].to_numpy(np.int32))
        store.write_array(t, "coords_mm", grid[["x_mm", "y_mm", "z_mm"]].to_numpy(np.float32))
        store.write_array(t, "roi", grid.roi.to_numpy())
        store.write_array(t, "hemi", grid.hemi.to_numpy())
        store.write_array(t, "distance_v1", (grid.y_mm - grid.y_mm.min()).to_numpy(np.float32))
        g.attrs.update({"modality": "fmri", "space": "func1pt8mm"})
    enc = tmp / f"enc_fmri_sub-{subject}.zarr"
    with store.atomic_group(enc) as g:
        for kind in KINDS:
            r = rng.uniform(0.0, 0.05, (len(DEPTHS), len(grid)))
            r[grid.best, np.arange(len(grid))] = 0.5
            r[:, :3] = 0.01  # three voxels significant for no layer
            store.write_array(g, f"r/{kind}", r.astype(np.float32))
        g.attrs.update(
            {
                "layers": [f"block{n}" for n in range(len(DEPTHS))],
                "relative_depths": DEPTHS,
                "kinds": KINDS,
                "n_train": 200,
            }
        )
    return Fit("toy_fmri", "toy_model", str(subject), str(enc), str(brain))


def meg_r(rng) -> dict[str, np.ndarray]:
    """r (layers, time-major targets): layer k peaks at 100 + 100 k ms (gradients: the reverse), weights per sensor."""
    out = {}
    for n, kind in enumerate(KINDS):
        peaks = 0.1 + 0.1 * np.arange(len(DEPTHS))
        peaks = peaks[::-1] if n % 2 else peaks
        env = np.exp(-0.5 * ((TIMES[None] - peaks[:, None]) / 0.05) ** 2)  # (layers, times)
        weights = rng.uniform(0.1, 1.0, (len(DEPTHS), len(CHANNELS)))
        out[kind] = (0.4 * env[:, :, None] * weights[:, None, :]).reshape(len(DEPTHS), -1)
    return out


def write_meg(tmp, subject: int, r: dict[str, np.ndarray]) -> Fit:
    brain = tmp / f"brain_meg_sub-{subject}.zarr"
    with store.atomic_group(brain) as g:
        t = g.create_group("targets")
        store.write_array(t, "channel", np.array(CHANNELS))
        store.write_array(t, "time", TIMES.astype(np.float32))
        g.attrs.update({"modality": "meg", "n_channels": len(CHANNELS), "n_times": len(TIMES)})
    enc = tmp / f"enc_meg_sub-{subject}.zarr"
    with store.atomic_group(enc) as g:
        for kind, values in r.items():
            store.write_array(g, f"r/{kind}", values.astype(np.float32))
        g.attrs.update(
            {
                "layers": [f"block{n}" for n in range(len(DEPTHS))],
                "relative_depths": DEPTHS,
                "kinds": KINDS,
                "n_train": 200,
            }
        )
    return Fit("toy_meg", "toy_model", str(subject), str(enc), str(brain))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The hierarchy tables of two fMRI and two MEG subjects, copied alone into a fresh folder."""
    tmp = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    meg = {s: meg_r(rng) for s in (1, 2)}
    fits = [write_fmri(tmp, s, rng) for s in (1, 2)] + [write_meg(tmp, s, meg[s]) for s in (1, 2)]
    hierarchy_tables(fits, CFG, {}, tmp / "hierarchy")
    tables = tmp_path_factory.mktemp("tables_only")
    for csv in (tmp / "hierarchy").glob("*.csv"):
        shutil.copy(csv, tables / csv.name)
    shutil.rmtree(tmp)  # the stores are gone: the report can read nothing but the tables
    return tables, meg


def test_best_layers_carry_grid_indices_and_mm_coordinates(study):
    tables, _ = study
    best = pd.read_csv(tables / "best_layers.csv")
    grid = fmri_grid()
    sub = best[(best.subject == 1) & (best.kind == "gradients")].reset_index(drop=True)
    assert (sub.space == "func1pt8mm").all()
    for col in ("i", "j", "k", "x_mm", "y_mm", "z_mm"):
        np.testing.assert_allclose(sub[col], grid[col], atol=1e-4)
    np.testing.assert_allclose(sub.best_depth[3:], np.asarray(DEPTHS)[grid.best[3:]], atol=1e-6)
    assert not sub.significant[:3].any() and sub.significant[3:].all()


def test_topographies_hold_each_sensor_at_the_sample_nearest_t_k(study):
    tables, meg = study
    topo, lat = pd.read_csv(tables / "topographies.csv"), pd.read_csv(tables / "latencies.csv")
    assert len(topo) == 2 * len(KINDS) * len(DEPTHS) * len(CHANNELS)
    for row in lat.itertuples():
        at = int(np.argmin(np.abs(TIMES - row.peak_latency)))
        sel = topo[(topo.subject == row.subject) & (topo.kind == row.kind) & (topo.layer == row.layer)]
        assert list(sel.channel) == CHANNELS
        np.testing.assert_allclose(sel.time, TIMES[at], atol=1e-6)
        k = DEPTHS.index(min(DEPTHS, key=lambda d: abs(d - row.depth)))
        expected = meg[row.subject][row.kind][k].reshape(len(TIMES), len(CHANNELS))[at]
        np.testing.assert_allclose(sel.value, expected, rtol=1e-5)


def test_draw_figures_from_the_tables_alone(study, tmp_path):
    tables, _ = study
    written = report_stage.draw_figures(tables, tmp_path / "figures", tmp_path / "summary")
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    expected = {f"toy_fmri__toy_model__{f}.png" for f in ("score_by_depth", "depth_vs_distance", "brain_map")}
    expected |= {f"toy_meg__toy_model__{f}.png" for f in ("meg_time_courses", "depth_vs_latency", "meg_topomaps")}
    assert figures == expected
    assert {p.name for p in (tmp_path / "summary").iterdir()} == {
        "summary.png",
        "tests.html",
        "verdicts.html",
        "claims.html",
    }
    assert set(written) == {
        *(tmp_path / "figures" / f for f in expected),
        *(tmp_path / "summary" / f for f in ("summary.png", "tests.html", "verdicts.html", "claims.html")),
    }
    for png in [*(tmp_path / "figures").glob("*.png"), tmp_path / "summary" / "summary.png"]:
        image = mpimg.imread(png)
        assert image.shape[0] > 200 and image.shape[1] > 200, png.name
        assert image[..., :3].std() > 0.05, f"{png.name} is blank"


def test_tests_table_lists_every_test_with_p_and_fdr(study, tmp_path):
    tables, _ = study
    tests = pd.read_csv(tables / "tests.csv")
    tests.loc[0, "p_fdr"] = 0.001  # one row below alpha, to see it highlighted
    out = tmp_path / "tests.html"
    report_tables.tests_table(tests, out)
    text = out.read_text()
    header = re.search(r"<thead><tr>(.*?)</tr></thead>", text).group(1)
    assert re.findall(r"<th>(.*?)</th>", header) == list(tests.columns)
    assert "<th>p</th>" in header and "<th>p_fdr</th>" in header
    assert text.count("<tr") == len(tests) + 1
    assert text.count('<tr class="significant">') == int((tests.p_fdr < 0.05).sum()) >= 1
    assert {m for m in tests.metric} <= set(re.findall(r'<td class="text">([a-z_]+)</td>', text))


def test_slice_image_places_each_voxel_at_its_grid_position():
    grid = fmri_grid().assign(best_depth=lambda f: f.best / 3, significant=lambda f: f.index % 5 != 0)
    values, present, extent = report_fmri.slice_image(grid, k=6)
    assert extent == [3, 6, 2, 7] and values.shape == present.shape == (6, 4)
    assert present.all()
    for row in grid[grid.k == 6].itertuples():
        v = values[row.j - 2, row.i - 3]
        assert np.isnan(v) if not row.significant else v == pytest.approx(row.best_depth)
    assert report_fmri.volume_slices(grid, max_slices=1) in ([5], [6])


def test_linear_axis_recovers_the_affine_or_refuses_an_oblique_grid():
    i = np.array([0, 1, 2, 5, 5])
    assert report_fmri._linear_axis(i, -1.8 * i + 40) == pytest.approx((-1.8, 40.0))
    assert report_fmri._linear_axis(i, 1.8 * i + np.array([0, 0, 0, 0, 0.9])) is None


def test_surface_values_use_fsaverage5_vertices_and_average_subjects(tmp_path):
    best = pd.DataFrame({
        "subject": [1, 2, 1, 2, 1, 1], "kind": "gradients", "hemi": ["lh", "lh", "rh", "rh", "lh", "lh"],
        "i": [5, 5, 7, 7, 20000, 9], "best_depth": [0.2, 0.6, 1.0, 0.0, 0.5, 0.3],
        "significant": [True, True, True, False, True, False], "space": "fsaverage",
    })  # fmt: skip
    group = report_surface.surface_values(best, "gradients")
    assert group["left"].shape == group["right"].shape == (report_style.FSAVERAGE5_VERTICES,)
    assert group["left"][5] == pytest.approx(0.4) and group["right"][7] == pytest.approx(1.0)
    assert np.isnan(group["left"][9]) and np.isfinite(group["left"]).sum() == 1  # 20000 is beyond fsaverage5
    assert report_surface.surface_values(best, "gradients", subject=2)["left"][5] == pytest.approx(0.6)
    scores = pd.DataFrame(columns=["subject", "kind", "metric", "value"])
    out = tmp_path / "surface.png"
    report_surface.surface_maps(best, scores, "toy", out, views=(("left", "ventral"),))
    assert mpimg.imread(out).shape[0] > 200


def test_ctf_layout_puts_sensors_where_their_names_say():
    names, pos = report_meg.sensor_positions(channel_names())
    assert len(names) == 271, "every THINGS-MEG channel is in mne's CTF-275 layout"
    assert np.linalg.norm(pos, axis=1).max() <= 0.095
    kind = np.array([n[:3] for n in names])
    assert (pos[np.char.startswith(kind, "ML"), 0] < 0).all() and (pos[np.char.startswith(kind, "MR"), 0] > 0).all()
    assert pos[np.isin(kind, ["MLF", "MRF"]), 1].min() > pos[np.isin(kind, ["MLO", "MRO"]), 1].max()


def test_eeg_channels_get_positions_from_the_10_20_montage():
    """THINGS-EEG2's 17 channels are no CTF sensors: they are placed by their 10-10 names (odd left, even right,
    occipital behind parietal), so its topomaps are drawn rather than left empty."""
    names, pos = report_meg.sensor_positions(list(EEG2_CHANNELS))
    assert names == list(EEG2_CHANNELS)
    assert np.linalg.norm(pos, axis=1).max() <= 0.095
    for name, (x, _) in zip(names, pos, strict=True):
        side = 0 if name.endswith("z") else -1 if int(name[-1]) % 2 else 1
        assert abs(x) < 0.002 if side == 0 else np.sign(x) == side, f"{name} at x = {x:.4f}"
    y = dict(zip(names, pos[:, 1], strict=True))
    assert y["Oz"] < y["POz"] < y["Pz"] and y["O1"] < y["P3"]


def test_spread_channels_cover_both_hemispheres_and_every_region():
    names = spread_channels(32)
    assert len(set(names)) == 32 and set(names) <= set(channel_names())
    assert {n[:3] for n in names} >= {"MLC", "MLF", "MLO", "MLP", "MLT", "MRC", "MRF", "MRO", "MRP", "MRT"}


def test_kind_colours_are_fixed_for_the_two_kinds_and_distinct_for_more():
    colours = report_style.kind_colours(["gradients", "zeta", "activations", "feedback_alignment"])
    assert colours["activations"] == "#0072B2" and colours["gradients"] == "#D55E00"
    assert len({colours[k] for k in ("activations", "gradients", "zeta", "feedback_alignment")}) == 4
    assert report_style.kind_colours(["feedback_alignment"])["feedback_alignment"] == colours["feedback_alignment"]


FIGURES = ("score_by_depth", "depth_vs_distance", "brain_map", "meg_time_courses", "depth_vs_latency", "meg_topomaps")


def render_caption(name: str, wildcards: dict, config: dict, params: dict) -> str:
    """A caption as `snakemake --report` renders it: Jinja (its settings), then reStructuredText to HTML."""
    from types import SimpleNamespace

    import jinja2
    from docutils.core import publish_parts

    text = (REPO / "workflow" / "report" / name).read_text()
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    smk = SimpleNamespace(wildcards=SimpleNamespace(**wildcards), config=config, params=SimpleNamespace(**params))
    rst = env.from_string(text).render(snakemake=smk)
    return publish_parts(rst, writer="html", settings_overrides={"halt_level": 2, "report_level": 5})["body"]


@pytest.mark.parametrize("space", ["func1pt8mm", "fsaverage"])
def test_captions_render_and_name_objective_pooling_folds_and_tests(space):
    from gradbrain.models.catalogue import model_spec

    config = default_config()
    config["datasets"]["sim_backprop_fmri"]["space"] = space
    models = {
        m: {k: model_spec(m, e or {})[k] for k in ("arch", "objective", "pooling", "weights")}
        for m, e in config["models"].items()
    }
    for figure in FIGURES:
        dataset = "sim_backprop_meg" if figure.startswith(("meg", "depth_vs_lat")) else "sim_backprop_fmri"
        html = render_caption(
            "figures.rst",
            {"dataset": dataset, "model": "demo_cnn", "figure": figure},
            config,
            {"models": models, "alpha": 0.05},
        )
        paragraphs = html.count("<p>")
        assert paragraphs == 2, f"{figure}: the figure text and the method should be two paragraphs"
        for needed in (
            "ce_pseudo",
            "mean",
            "5-fold",
            "1000 permutations",
            "Wilcoxon",
            "BH-FDR",
            "resnet18",
            "10 values log-spaced over 10^0..10^8",
        ):
            assert needed in html, f"caption of {figure} does not say {needed!r}"
        if figure == "brain_map":
            assert ("fsaverage5" in html) == (space == "fsaverage") and ("Axial" in html) == (space != "fsaverage")
    for name in ("summary", "tests", "verdicts"):
        html = render_caption("summary.rst", {"name": name}, config, {})
        assert html.count("<p>") == 2 and "results/hierarchy/*.csv" in html


def test_summary_is_readable_at_report_width(tmp_path):
    """Seven metrics used to give one row of 7 panels, 2,090 px wide; now rows of at most 3 panels, ~1,000 px."""
    rows = [("d", "m", "1", kind, metric, 0.5, "") for metric in report_tables.SUMMARY_METRICS
            for kind in ("activations", "gradients")]  # fmt: skip
    scores = pd.DataFrame(rows, columns=["dataset", "model", "subject", "kind", "metric", "value", "note"])
    report_tables.summary(scores, tmp_path / "summary.png")
    height, width = mpimg.imread(tmp_path / "summary.png").shape[:2]
    assert len(report_tables.SUMMARY_METRICS) == 7 and width <= 1100 and height < width


def test_brain_map_legend_names_the_grey_voxels(study, tmp_path, monkeypatch):
    """The grey voxels of the brain map (analysed, not significant) have a legend entry."""
    tables, _ = study
    seen = []
    real = report_fmri.plt.Figure.legend

    def legend(fig, *args, **kwargs):
        seen.extend(h.get_label() for h in kwargs.get("handles", []))
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(report_fmri.plt.Figure, "legend", legend)
    best = pd.read_csv(tables / "best_layers.csv")
    scores = pd.read_csv(tables / "scores.csv")
    report_fmri.volume_maps(best[best.dataset == "toy_fmri"], scores, "toy", tmp_path / "map.png")
    assert "analysed voxel, not significant for that kind" in seen
