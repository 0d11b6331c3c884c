"""Bar (a) of issue 4 on the real BROAD recordings, through the kalman block's /batch with state."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from tests.shared_data import BROAD_DIR  # noqa: E402
import broad_block  # noqa: E402

TRIALS = sorted(BROAD_DIR.glob("*.npz"))

pytestmark = pytest.mark.skipif(not TRIALS, reason=f"BROAD trials not found in {BROAD_DIR}")


@pytest.fixture(scope="module")
def client():
    return broad_block.make_client()


@pytest.mark.parametrize("path", TRIALS, ids=[p.stem[:2] for p in TRIALS])
def test_vqf_window_means_within_one_degree_of_the_optical_reference(client, path):
    row = broad_block.evaluate(client, broad_block.load_trial(path), "vqf")
    assert row["scored"] >= 30
    assert row["roll_rms"] <= 1.0 and row["pitch_rms"] <= 1.0, row


def test_reference_window_means_handle_roll_across_180_and_hidden_markers():
    # Roll alternating around +-180 (about x by 179 and 181 degrees); half the second window hidden.
    half = np.radians([179.0, 181.0]) / 2
    quat = np.array([[np.cos(h), np.sin(h), 0.0, 0.0] for h in half] * 4)
    quat[4:6] = np.nan
    roll, pitch, scored = broad_block.reference_windows(quat, window=4, n_windows=2)
    assert abs(abs(roll[0]) - 180.0) < 1e-6 and abs(pitch[0]) < 1e-9
    assert abs(abs(roll[1]) - 180.0) < 1e-6
    # Both windows are left out: the first is the start-up, the second has |roll| > 150.
    assert not scored.any()
