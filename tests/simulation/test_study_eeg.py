"""The simulated THINGS-EEG2 study (``simulation.eeg``): written in the released format, read back by the real reader
with the planted design (shapes, image order, splits, the MEG brain's responses), prepared as the workflow prepares
it, and written only when configured."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.simulation import FMRI, stimuli

from gradbrain import store
from gradbrain.data.prepare import dataset_stimulus_ids, image_reader, prepare_meg
from gradbrain.data.things_eeg2.layout import CHANNELS, EPOCHS
from gradbrain.data.things_eeg2.read import image_ids, load_subject, read_split
from gradbrain.simulation import stimuli as sim_stimuli
from gradbrain.simulation.brain import sensor_truth
from gradbrain.simulation.eeg import concept_folder, simulate_eeg
from gradbrain.simulation.photos import PHOTOGRAPHS, crops
from gradbrain.simulation.rsvp import eeg_responses
from gradbrain.simulation.study import simulate_study

N_TRAIN, N_TEST, SEED = 24, 3, 7
EEG = {"n_subjects": 3, "n_images": N_TRAIN, "n_test_images": N_TEST, "repeats": 2, "test_repeats": 5,
       "noise": 0.0, "soa": 0.2}  # fmt: skip
BRAIN = {"sources_per_layer": 2, "width": 0.04, "activation_latency": [0.08, 0.38], "gradient_latency": [0.45, 0.9]}


def _stimuli(n: int, seed: int = 0) -> tuple:
    """The shared test stimuli, with as many photograph labels as the simulation has."""
    return stimuli(n, np.random.default_rng(seed), n_labels=len(PHOTOGRAPHS))


def test_the_written_study_reads_back_with_the_planted_design(tmp_path):
    """Without noise and with the images 2 s apart (no overlap), every repetition of image i is image i's response of
    the MEG brain from its onset, so the order of the conditions, the splits and the repetitions are all checked."""
    stimuli = _stimuli(N_TRAIN + N_TEST)
    cfg = {**EEG, "soa": 2.0}
    truth = simulate_eeg(tmp_path / "eeg", tmp_path / "images", "backprop", cfg, BRAIN, stimuli, seed=SEED)
    assert truth == sensor_truth("backprop", stimuli[2][0].depths, BRAIN, [1, 2, 3])
    ids = image_ids(tmp_path / "images")
    labels = stimuli[1]
    assert [i.split("/")[:2] for i in ids["train"]] == [
        ["training_images", concept_folder(x)] for x in labels[:N_TRAIN]
    ]
    assert [i.split("/")[:2] for i in ids["test"]] == [["test_images", concept_folder(x)] for x in labels[N_TRAIN:]]
    pixels = image_reader({"format": "things_eeg2", "images_root": str(tmp_path / "images")})(
        [*ids["train"], *ids["test"]]
    )
    flat = lambda x: x.reshape(len(x), -1).astype(float)  # noqa: E731
    distance = ((flat(pixels)[:, None] - flat(stimuli[0])[None]) ** 2).mean(axis=2)
    assert list(distance.argmin(axis=1)) == list(range(N_TRAIN + N_TEST)), "the stimuli, in the files' order"
    pre = int(round(-EPOCHS.tmin * EPOCHS.sfreq))
    for subject in truth["subjects"]:
        responses = eeg_responses("backprop", stimuli[2], BRAIN, np.random.default_rng([SEED, subject]))
        for split, rows, reps in (("train", slice(0, N_TRAIN), 2), ("test", slice(N_TRAIN, None), 5)):
            content = read_split(tmp_path / "eeg", subject, split)
            data = content["preprocessed_eeg_data"]
            assert data.shape == (len(responses[rows]), reps, len(CHANNELS), EPOCHS.n_times)
            assert list(content["ch_names"]) == list(CHANNELS)
            np.testing.assert_allclose(content["times"], EPOCHS.times)
            own = responses[rows][:, None, :, : EPOCHS.n_times - pre]
            np.testing.assert_allclose(data[..., pre:], np.broadcast_to(own, data[..., pre:].shape), atol=1e-5)
            np.testing.assert_allclose(data[..., :pre], 0, atol=1e-5)
    got = load_subject(tmp_path / "eeg", tmp_path / "images", 2, lowpass=None, sfreq=None, zscore=False)
    assert got.Y.shape == (N_TRAIN, len(CHANNELS), EPOCHS.n_times)
    assert got.test_Y.shape == (N_TEST, len(CHANNELS), EPOCHS.n_times)
    assert list(got.stimulus_ids) == list(ids["train"]) and list(got.test_ids) == list(ids["test"])


def test_the_rapid_presentation_mixes_the_neighbours_in(tmp_path):
    """At THINGS-EEG2's 200 ms the epochs hold the neighbours' tails: repetitions of an image differ (no noise), and
    each participant has a brain of their own."""
    stimuli = _stimuli(N_TRAIN + N_TEST)
    simulate_eeg(tmp_path / "eeg", tmp_path / "images", "backprop", EEG, BRAIN, stimuli, seed=SEED)
    one, two = (read_split(tmp_path / "eeg", s, "test")["preprocessed_eeg_data"] for s in (1, 2))
    assert np.abs(one[:, 0] - one[:, 1]).max() > 1e-3
    assert np.abs(one - two).max() > 1e-3


def _store(path, parts: dict[str, int]) -> None:
    """A stimuli store like simulate_stimuli's, with random driver features."""
    with store.atomic_group(path) as group:
        for part, n in parts.items():
            images, labels, (driver,) = _stimuli(n, seed=len(part))
            sub = group.create_group(part)
            store.write_array(sub, "images", images)
            store.write_array(sub, "labels", labels)
            model = sub.create_group("d")
            model.attrs["depths"] = [0.0, 1.0]
            for kind in ("activations", "gradients"):
                for k, layer in enumerate(driver.features(kind)):
                    store.write_array(model, f"{kind}/{k:02d}", layer.astype(np.float32))


@pytest.fixture(scope="module")
def study_cfg() -> dict:
    fmri = {**FMRI, "n_images": 16}
    meg = {
        **BRAIN,
        "n_images": 16,
        "n_subjects": 1,
        "n_sensors": 4,
        "noise": 1.0,
        "noise_smooth": 2.0,
        "n_test_images": 2,
        "test_repeats": 2,
        "n_catch": 2,
    }
    return {"seed": 0, "image_size": 16, "fmri": fmri, "meg": meg}


def test_simulate_study_writes_the_eeg_study_only_when_configured(tmp_path, study_cfg):
    _store(tmp_path / "stimuli.zarr", {"fmri": 16, "meg": 18, "eeg": N_TRAIN + N_TEST})
    plain = simulate_study(tmp_path / "plain", "misaligned", study_cfg, tmp_path / "stimuli.zarr")
    assert "eeg" not in plain and not (tmp_path / "plain" / "things-eeg2").exists()
    assert not (tmp_path / "plain" / "things-eeg2-images").exists()
    with_eeg = simulate_study(tmp_path / "eeg", "misaligned", {**study_cfg, "eeg": EEG}, tmp_path / "stimuli.zarr")
    written = json.loads((tmp_path / "eeg" / "truth.json").read_text())
    assert written["eeg"] == with_eeg["eeg"] and written["eeg"]["subjects"] == [1, 2, 3]
    assert written["eeg"]["gradient_latency"][0] < written["eeg"]["gradient_latency"][-1], "misaligned: forward order"
    assert {k: with_eeg[k] for k in ("fmri", "meg")} == {k: plain[k] for k in ("fmri", "meg")}
    for part in ("things-meg", "things-images", "nsd/nsddata_betas"):  # the other studies are left as they were
        files = sorted(p.relative_to(tmp_path / "plain") for p in (tmp_path / "plain" / part).rglob("*") if p.is_file())
        assert files and all(
            (tmp_path / "plain" / f).read_bytes() == (tmp_path / "eeg" / f).read_bytes() for f in files
        )
    dataset = {"modality": "meg", "format": "things_eeg2", "simulated": "misaligned",
               "root": str(tmp_path / "eeg" / "things-eeg2"),
               "images_root": str(tmp_path / "eeg" / "things-eeg2-images"),
               "subjects": [1, 2, 3], "heldout": "test",
               "preprocessing": {"lowpass": 20.0, "sfreq": 30.0, "tmin": -0.2, "tmax": 0.79}}  # fmt: skip
    assert len(dataset_stimulus_ids(dataset)) == N_TRAIN + N_TEST
    out = prepare_meg(dataset, 3, tmp_path / "brain" / "sub-3")
    group = store.open_group(out)
    assert list(group["split"][...]) == ["train"] * N_TRAIN + ["test"] * N_TEST
    assert group.attrs["n_channels"] == len(CHANNELS) and group.attrs["n_times"] == 30


def test_the_stimuli_store_has_an_eeg_part_only_when_configured(tmp_path):
    """simulate_stimuli crops the EEG study's images (JPEG round-tripped, as the reader returns them) and computes the
    drivers' features on them only with simulation.eeg; the other parts stay as they are."""
    import torch

    from gradbrain.models.catalogue import model_spec
    from gradbrain.models.load import load_model

    torch.manual_seed(0)
    model = load_model(model_spec("demo_vit", {"weights": {"demo": False}, "n_layers": 2}))
    cfg = {"seed": 0, "image_size": 32, "readout_components": 4, "fmri": {"n_images": 6},
           "meg": {"n_images": 6, "n_test_images": 2}}  # fmt: skip
    sim_stimuli.make_stimuli(tmp_path / "plain.zarr", cfg, [model])
    sim_stimuli.make_stimuli(tmp_path / "eeg.zarr", {**cfg, "eeg": {"n_images": 8, "n_test_images": 3}}, [model])
    assert sorted(store.open_group(tmp_path / "plain.zarr").group_keys()) == ["fmri", "meg"]
    for part in ("fmri", "meg"):
        plain, with_eeg = (sim_stimuli.load_stimuli(tmp_path / f"{n}.zarr", part) for n in ("plain", "eeg"))
        np.testing.assert_array_equal(plain[0], with_eeg[0])
        np.testing.assert_array_equal(plain[2][0].activations[1], with_eeg[2][0].activations[1])
    images, labels, (driver,) = sim_stimuli.load_stimuli(tmp_path / "eeg.zarr", "eeg")
    assert images.shape == (11, 32, 32, 3) and len(labels) == 11 and driver.gradients[0].shape[0] == 11
    raw, raw_labels = crops(11, 32, seed=3)  # seed * 2 + 3: a crop set of its own
    np.testing.assert_array_equal(images, sim_stimuli.jpeg_roundtrip(raw))
    np.testing.assert_array_equal(labels, raw_labels)
