"""simulate_fmri with image counts whose showings do not fill whole sessions: a shorter last session.

The study is written in the real NSD formats and read back by the NSD loader, as prepare_fmri reads it.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from helpers.simulation import FMRI as SMALL_FMRI
from helpers.simulation import stimuli

from gradbrain.data.nsd.paths import betas_path, stim_info_path
from gradbrain.data.nsd.read import trial_table
from gradbrain.data.nsd.subject import load_subject
from gradbrain.simulation import study as sim_study

TPS = 50
FMRI = {**SMALL_FMRI, "n_subjects": 1, "repeats": 3, "voxels_per_roi": 8, "trials_per_session": TPS}


@pytest.mark.parametrize("n_images", [40, 10])  # 120 trials: sessions of 50, 50, 20; 30 trials: one short session
def test_showings_that_do_not_fill_sessions_end_in_a_shorter_last_session(tmp_path, n_images):
    cfg = {**FMRI, "n_images": n_images}
    truth = sim_study.simulate_fmri(tmp_path, "backprop", cfg, stimuli(n_images, np.random.default_rng(0)), seed=3)
    n_trials = n_images * cfg["repeats"]
    n_sessions = -(-n_trials // TPS)
    assert truth["n_sessions"] == n_sessions
    lengths = [nib.load(betas_path(tmp_path, 1, s)).shape[3] for s in range(1, n_sessions + 1)]
    assert lengths == [TPS] * (n_sessions - 1) + [n_trials - (n_sessions - 1) * TPS]
    assert not betas_path(tmp_path, 1, n_sessions + 1).exists()

    table = trial_table(tmp_path, 1, n_sessions, trials_per_session=TPS)
    assert table.groupby("session").size().tolist() == lengths
    assert (table["nsd_id"].value_counts() == cfg["repeats"]).all() and table["nsd_id"].nunique() == n_images

    stim = pd.read_csv(stim_info_path(tmp_path), index_col=0)
    reps = stim[[f"subject1_rep{r}" for r in range(3)]].to_numpy()
    assert (reps > 0).all() and sorted(reps.ravel()) == list(range(1, n_trials + 1))

    targets = load_subject(tmp_path, 1, n_sessions, {"prf-visualrois": ["V1", "V2"]}, trials_per_session=TPS)
    assert targets.Y.shape[0] == n_images and (targets.n_repeats == cfg["repeats"]).all()
    assert np.isfinite(targets.Y).all()


def test_sessions_beyond_the_design_are_refused(tmp_path):
    cfg = {**FMRI, "n_images": 40}
    sim_study.simulate_fmri(tmp_path, "backprop", cfg, stimuli(40, np.random.default_rng(0)), seed=3)
    with pytest.raises(ValueError, match="lower n_sessions"):
        trial_table(tmp_path, 1, 4, trials_per_session=TPS)
