"""THINGS-MEG reader: trial-to-image mapping, streamed targets against a direct computation, splits and errors."""

from __future__ import annotations

import re
import shutil

import mne
import numpy as np
import pandas as pd
import pytest
from helpers import REPO

from gradbrain.data.things_meg.layout import METADATA_COLUMNS, channel_names, stimulus_id
from gradbrain.data.things_meg.read import MEGFileError, load_subject, read_images, stimulus_ids
from gradbrain.data.things_meg.write import metadata_frame, write_epochs, write_image

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.set_index")
REAL = REPO.parent / "shared" / "real" / "things-meg"
needs_real = pytest.mark.skipif(
    not REAL.is_dir(), reason=f"real THINGS-MEG metadata not present at {REAL} (only in the development checkout)"
)
SFREQ, TMIN, N_TIMES, N_CH = 200.0, -0.1, 281, 8


def independent_ids(md: pd.DataFrame) -> list[str | None]:
    """Trial -> THINGS id from the metadata, written separately from the module's stimulus_id."""
    out: list[str | None] = []
    for t, p in zip(md["trial_type"], md["image_path"], strict=True):
        if t == "catch":
            out.append(None)
        elif t == "exp":
            folder, concept, name = p.split("/")
            assert folder == "images_meg"
            out.append(f"{concept}/{name}")
        else:
            name = p.split("/")[-1]
            concept = re.fullmatch(r"(.+)_\d+s\.jpg", name).group(1)
            out.append(f"{concept}/{name}")
    return out


def make_trials(seed: int = 0) -> pd.DataFrame:
    """3 concepts x 4 exemplars (one shown twice), 2 test images x 3 repeats, 3 catch; shuffled."""
    rows = []
    for c in ["aardvark", "coat_rack", "ice_cream"]:
        for k in range(1, 5):
            rows.append(("exp", f"images_meg/{c}/{c}_{k:02d}{'b' if k == 1 else 'n'}.jpg"))
    rows.append(("exp", "images_meg/aardvark/aardvark_02n.jpg"))
    rows += [("test", "images_test_meg/coat_rack_13s.jpg"), ("test", "images_test_meg/zebra_02s.jpg")] * 3
    rows += [("catch", f"images_catch_meg/catch_{k:02d}.jpg") for k in range(3)]
    order = np.random.default_rng(seed).permutation(len(rows))
    types, paths = zip(*[rows[i] for i in order], strict=True)
    return metadata_frame(list(types), list(paths), session_nr=1, run_nr=np.repeat([1, 2], [11, len(rows) - 11]))


def make_data(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(N_TIMES) / SFREQ
    slow = np.sin(2 * np.pi * rng.uniform(1, 8, (n, N_CH, 1)) * t)
    return (rng.standard_normal((n, N_CH, N_TIMES)) + 3 * slow + rng.normal(0, 2, (1, N_CH, 1))).astype(np.float32)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("things_meg")
    md = make_trials()
    data = make_data(len(md))
    write_epochs(root / "plain", 1, data, md, channel_names(N_CH))
    write_epochs(root / "plain", 2, data[:5], md.iloc[:5], channel_names(N_CH))
    first = write_epochs(root / "split", 1, data, md, channel_names(N_CH), split_size=1_200_000)
    return {"root": root / "plain", "split_root": root / "split", "first": first, "md": md, "data": data}


def reference(data, md, *, split="standard", lowpass=20.0, sfreq=30.0, zscore=True):
    """Direct computation on the full array: filter, resample, z-score over kept trials, average per image."""
    x = data.astype(np.float64)
    if lowpass is not None:
        x = mne.filter.filter_data(x, SFREQ, None, lowpass, method="fir", verbose=False)
    if sfreq is not None:
        x = mne.filter.resample(x, up=sfreq, down=SFREQ, axis=-1, verbose=False)
    ids = np.array(independent_ids(md), dtype=object)
    types = md["trial_type"].to_numpy()
    test_concepts = {i.split("/")[0] for i in ids[types == "test"]}
    train = types == "exp"
    if split == "zeroshot":
        train &= np.array([i is not None and i.split("/")[0] not in test_concepts for i in ids])
    keep = train | (types == "test")
    if zscore:
        x = (x - x[keep].mean(0)) / x[keep].std(0)
    train_ids = sorted(set(ids[train]))
    test_ids = sorted(set(ids[types == "test"]))
    Y = np.stack([x[train & (ids == s)].mean(0) for s in train_ids])
    test_Y = np.stack([x[(types == "test") & (ids == s)].mean(0) for s in test_ids])
    return train_ids, Y, test_ids, test_Y


def test_channel_names():
    names = channel_names()
    assert len(names) == 271 and len(set(names)) == 271
    assert "MRO11-1609" not in names
    assert all(re.fullmatch(r"M[LRZ][CFOPT]\d\d-1609", n) for n in names)
    assert channel_names(8) == names[:8]


@needs_real
def test_channel_names_match_real_channels_tsv():
    ch = pd.read_csv(REAL / "sub-BIGMEG1_ses-01_task-main_run-01_channels.tsv", sep="\t")
    # The published channels.tsv types the 272 axial gradiometers "OTHER" (not MEGGRADAXIAL); the references
    # are MEGREFGRADAXIAL / MEGREFMAG, so pick the sensor rows by type and by CTF sensor name.
    sensor = ch["type"].isin(["MEGGRADAXIAL", "OTHER"]) & ch["name"].str.fullmatch(r"M[LRZ][CFOPT]\d\d-\d+")
    grads = ch.loc[sensor, "name"].tolist()
    assert len(grads) == 272 and "MRO11-1609" in grads
    assert channel_names() == [n for n in grads if n != "MRO11-1609"]


def test_stimulus_id():
    assert stimulus_id("images_meg/aardvark/aardvark_01b.jpg") == "aardvark/aardvark_01b.jpg"
    assert stimulus_id("images_test_meg/coat_rack_13s.jpg") == "coat_rack/coat_rack_13s.jpg"
    assert stimulus_id("images_catch_meg/catch_01.jpg") is None
    with pytest.raises(ValueError, match="unrecognised"):
        stimulus_id("object_images/aardvark/aardvark_01b.jpg")


def test_metadata_frame_layout():
    md = make_trials()
    assert list(md.columns) == METADATA_COLUMNS and len(md.columns) == 18
    test = md["trial_type"] == "test"
    assert sorted(md.loc[test, "test_image_nr"].unique()) == [1, 2]
    assert md.loc[~test, "test_image_nr"].isna().all()
    catch = md["trial_type"] == "catch"
    assert md.loc[catch, ["things_image_nr", "things_category_nr", "image_nr"]].isna().all().all()
    assert md.loc[~catch, "things_image_nr"].notna().all()
    # one number per image, the same for its repeats
    assert md.loc[~catch].groupby("image_path")["things_image_nr"].nunique().eq(1).all()


def test_written_epochs_follow_real_layout(fixture):
    ep = mne.read_epochs(fixture["first"], preload=False, verbose=False)
    assert ep.get_data().shape == (len(fixture["md"]), N_CH, N_TIMES)
    assert np.isclose(ep.times[0], -0.1) and np.isclose(ep.times[-1], 1.3)
    assert list(ep.metadata.columns) == METADATA_COLUMNS
    catch = fixture["md"]["trial_type"].to_numpy() == "catch"
    assert (ep.events[catch, 2] == 999999).all()
    assert np.array_equal(ep.events[~catch, 2], fixture["md"]["things_image_nr"].to_numpy()[~catch].astype(int))
    assert ep.event_id == {str(v): v for v in np.unique(ep.events[:, 2])}
    assert (fixture["split_root"] / "derivatives/preprocessed/preprocessed_P1-epo-1.fif").is_file()
    assert not (fixture["root"] / "derivatives/preprocessed/preprocessed_P1-epo-1.fif").exists()


def test_trial_to_image_mapping(fixture):
    md = fixture["md"]
    ids = independent_ids(md)
    assert [stimulus_id(p) for p in md["image_path"]] == ids
    exp = sorted({i for i, t in zip(ids, md["trial_type"], strict=True) if t == "exp"})
    test = sorted({i for i, t in zip(ids, md["trial_type"], strict=True) if t == "test"})
    assert test == ["coat_rack/coat_rack_13s.jpg", "zebra/zebra_02s.jpg"] and len(exp) == 12
    assert list(stimulus_ids(fixture["root"], [1])) == sorted(exp + test)
    assert set(stimulus_ids(fixture["root"], [1, 2])) == set(exp + test)
    out = load_subject(fixture["root"], 1, lowpass=None, sfreq=None, zscore=False)
    assert list(out.stimulus_ids) == exp and list(out.test_ids) == test


def test_load_subject_matches_direct_computation(fixture):
    messages: list[str] = []
    out = load_subject(fixture["root"], 1, chunk_trials=5, log=messages.append)
    train_ids, Y, test_ids, test_Y = reference(fixture["data"], fixture["md"])
    assert messages
    assert out.Y.dtype == np.float32 and out.Y.shape == (12, N_CH, 42)
    assert list(out.stimulus_ids) == train_ids and list(out.test_ids) == test_ids
    np.testing.assert_allclose(out.Y, Y, atol=1e-5)
    np.testing.assert_allclose(out.test_Y, test_Y, atol=1e-5)
    np.testing.assert_allclose(out.times, -0.1 + np.arange(42) / 30.0)
    assert out.ch_names == channel_names(N_CH)
    assert out.n_dropped_catch == 3
    whole = load_subject(fixture["root"], 1)
    np.testing.assert_allclose(whole.Y, out.Y, atol=1e-5)


def test_averaging_and_crop_without_processing(fixture):
    md, data = fixture["md"], fixture["data"]
    out = load_subject(fixture["root"], 1, lowpass=None, sfreq=None, zscore=False, tmin=0.0, tmax=0.5)
    assert np.isclose(out.times[0], 0.0) and np.isclose(out.times[-1], 0.5) and len(out.times) == 101
    window = slice(20, 121)
    ids = np.array(independent_ids(md), dtype=object)
    for k, s in enumerate(out.test_ids):
        rep = np.flatnonzero(ids == s)
        assert len(rep) == 3
        np.testing.assert_allclose(out.test_Y[k], data[rep, :, window].astype(np.float64).mean(0), atol=1e-5)
    rep = np.flatnonzero(ids == "aardvark/aardvark_02n.jpg")
    assert len(rep) == 2
    k = list(out.stimulus_ids).index("aardvark/aardvark_02n.jpg")
    np.testing.assert_allclose(out.Y[k], data[rep, :, window].mean(0), atol=1e-5)


def test_zeroshot_split(fixture):
    out = load_subject(fixture["root"], 1, split="zeroshot")
    train_ids, Y, test_ids, test_Y = reference(fixture["data"], fixture["md"], split="zeroshot")
    assert not any(s.startswith("coat_rack/") for s in out.stimulus_ids) and len(out.stimulus_ids) == 8
    assert list(out.stimulus_ids) == train_ids
    np.testing.assert_allclose(out.Y, Y, atol=1e-5)
    np.testing.assert_allclose(out.test_Y, test_Y, atol=1e-5)
    with pytest.raises(ValueError, match="split"):
        load_subject(fixture["root"], 1, split="bogus")


def test_split_files(fixture, tmp_path):
    plain = load_subject(fixture["root"], 1, chunk_trials=7)
    split = load_subject(fixture["split_root"], 1, chunk_trials=7)
    np.testing.assert_array_equal(plain.Y, split.Y)
    broken = tmp_path / "broken"
    shutil.copytree(fixture["split_root"], broken)
    (broken / "derivatives/preprocessed/preprocessed_P1-epo-1.fif").unlink()
    with pytest.raises(FileNotFoundError, match=r"preprocessed_P1-epo-1\.fif.*together"):
        load_subject(broken, 1)


@pytest.mark.parametrize(("name", "keep"), [("preprocessed_P1-epo-1.fif", 0.6), ("preprocessed_P1-epo.fif", 0.02)])
def test_truncated_split_file_is_named(fixture, tmp_path, name, keep):
    """A download cut short: mne fails with e.g. 'cannot reshape array of size 8067 into shape (32,281)'."""
    broken = tmp_path / "broken"
    shutil.copytree(fixture["split_root"], broken)
    path = broken / "derivatives/preprocessed" / name
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    with pytest.warns(RuntimeWarning, match="Invalid tag"), pytest.raises(MEGFileError) as err:
        load_subject(broken, 1)
    assert f"{path} is truncated or corrupt; download it again" in str(err.value)


def test_missing_first_file_and_metadata_errors(fixture, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"preprocessed_P3-epo\.fif.*ds004212.*derivatives/preprocessed"):
        load_subject(fixture["root"], 3)
    md = fixture["md"][["trial_type", "things_image_nr"]]
    write_epochs(tmp_path, 1, fixture["data"], md, channel_names(N_CH))
    with pytest.raises(ValueError, match=r"preprocessed_P1-epo\.fif.*image_path"):
        load_subject(tmp_path, 1)
    with pytest.raises(ValueError, match="image_path"):
        stimulus_ids(tmp_path, [1])


def test_images_roundtrip_and_missing(tmp_path):
    yy, xx = np.mgrid[0:32, 0:48]
    img = np.stack([yy * 7, xx * 5, (yy + xx) * 3], -1).astype(np.uint8)
    path = write_image(tmp_path, "coat_rack/coat_rack_13s.jpg", img)
    assert path == tmp_path / "object_images/coat_rack/coat_rack_13s.jpg"
    out = read_images(tmp_path, ["coat_rack/coat_rack_13s.jpg"] * 2)
    assert out.shape == (2, 32, 48, 3) and out.dtype == np.uint8
    assert np.abs(out[0].astype(int) - img).mean() < 3
    assert read_images(tmp_path, ["coat_rack/coat_rack_13s.jpg"], size=16).shape == (1, 16, 16, 3)
    with pytest.raises(FileNotFoundError, match=r"object_images/zebra/zebra_02s\.jpg.*jum2f.*THINGS_PASSWORD"):
        read_images(tmp_path, ["zebra/zebra_02s.jpg"])


@needs_real
def test_real_event_sequence_maps_to_event_values(tmp_path):
    """Metadata built from the real session-1 events; load_subject must recover each trial's events `value`."""
    runs = sorted(REAL.glob("sub-BIGMEG1_ses-01_task-main_run-*_events.tsv"))
    assert len(runs) == 10
    ev = pd.concat(
        [pd.read_csv(p, sep="\t", na_values="N/A").assign(run_nr=r + 1) for r, p in enumerate(runs)], ignore_index=True
    )
    assert ev["trial_type"].value_counts().to_dict() == {"exp": 1854, "test": 200, "catch": 200}
    catch = ev["trial_type"].eq("catch").to_numpy()
    value = np.where(catch, 999999, ev["value"].fillna(0)).astype(int)
    # Synthetic THINGS file names that encode the image number, as a catalogue independent of the module.
    concept = [f"obj_{int(c)}" if c == c else None for c in ev["things_category_nr"]]
    name = {"exp": "images_meg/{c}/{c}_{v}n.jpg", "test": "images_test_meg/{c}_{v}s.jpg"}
    paths = [
        f"images_catch_meg/catch_{i}.jpg" if t == "catch" else name[t].format(c=c, v=v)
        for i, (t, c, v) in enumerate(zip(ev["trial_type"], concept, value, strict=True))
    ]
    catalogue = {
        (f"{c}/{p.split('/')[-1]}"): v
        for t, c, p, v in zip(ev["trial_type"], concept, paths, value, strict=True)
        if t != "catch"
    }
    # Reproduce the known quirk: things_image_nr disagrees with the events for test trials.
    quirky = np.where(ev["trial_type"].eq("test"), value + 1, value).astype(float)
    md = metadata_frame(
        ev["trial_type"],
        paths,
        1,
        ev["run_nr"],
        things_image_nr=quirky,
        things_category_nr=ev["things_category_nr"],
        onset=ev["onset"],
    )
    data = np.broadcast_to(np.where(catch, 0, value).astype(np.float32)[:, None, None], (len(ev), 2, 4))
    first = write_epochs(tmp_path, 1, data, md, channel_names(2), values=value)
    assert np.array_equal(mne.read_epochs(first, preload=False, verbose=False).events[:, 2], value)
    out = load_subject(tmp_path, 1, lowpass=None, sfreq=None, zscore=False, chunk_trials=500)
    assert out.n_dropped_catch == 200 and len(out.stimulus_ids) == 1854 and len(out.test_ids) == 200
    got = out.Y[:, 0, 0].astype(int)
    assert np.array_equal(got, [catalogue[s] for s in out.stimulus_ids])
    exp = ev["trial_type"].eq("exp").to_numpy()
    assert sorted(got) == sorted(value[exp])
    assert np.array_equal(out.test_Y[:, 0, 0].astype(int), [catalogue[s] for s in out.test_ids])
