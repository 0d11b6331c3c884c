"""BROAD through the kalman block (issue 4, bar a): window means of roll and pitch against the
optical reference.

For every BROAD trial in the shared data folder and every orientation filter, the trial is cut
into consecutive 2 s windows and sent to `/blocks/kalman/batch` through Flask's test client, 10
windows per request, the state of each request passed into the next (as Studio does across a
stream). Each window's `roll_mean` and `pitch_mean` are compared with the window means of the
reference orientation (ZYX Euler angles of the optical quaternion, the block's convention;
NaN samples, where markers were hidden, left out; roll averaged wrap-aware, as the block does).
Left out: the first window (start-up), windows where the reference |pitch| exceeds 60 degrees or
|roll| 150 degrees anywhere (Euler angles are ill-conditioned there) and windows with less than
half of their reference samples valid. The bar: RMS over the kept windows of the wrap-aware
differences, under 1.0 degree for roll and for pitch.

Usage: `.venv/bin/python bench/broad_block.py [--filters ekf,vqf] [--mag] [--window-seconds 2]`
prints a markdown table (one row per filter and trial). Data: `$SHARED_DIR/data/broad` or
`../shared/data/broad` next to the repository.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from dsp.fusion.orientation import FILTERS as ORIENTATION_FILTERS  # noqa: E402
from dsp.fusion.quaternion import euler_zyx  # noqa: E402
from tests.shared_data import BROAD_DIR  # noqa: E402

BAR_DEGREES = 1.0
MAX_PITCH_DEGREES = 60.0
MAX_ROLL_DEGREES = 150.0
MIN_VALID_REFERENCE = 0.5
WINDOWS_PER_BATCH = 10


def trial_paths() -> list[Path]:
    return sorted(BROAD_DIR.glob("*.npz"))


def load_trial(path: Path) -> dict:
    with np.load(path) as data:
        return {
            "name": path.stem,
            "fs": float(data["fs"]),
            "acc": np.asarray(data["acc"], dtype=np.float64),
            "gyr": np.asarray(data["gyr"], dtype=np.float64),
            "mag": np.asarray(data["mag"], dtype=np.float64),
            "quat": np.asarray(data["quat"], dtype=np.float64),
        }


def wrap_degrees(angle):
    return (np.asarray(angle) + 180.0) % 360.0 - 180.0


def wrap_aware_mean(angle_deg: np.ndarray) -> float:
    """Mean of angles that may straddle +-180: deviations from the circular mean, averaged."""
    radians = np.radians(angle_deg)
    centre = np.degrees(np.arctan2(np.sin(radians).mean(), np.cos(radians).mean()))
    return float(centre + wrap_degrees(angle_deg - centre).mean())


def reference_windows(quat: np.ndarray, window: int, n_windows: int):
    """Per window: reference roll and pitch means (deg) and whether the window is scored."""
    roll, pitch, _ = (np.degrees(a) for a in euler_zyx(np.nan_to_num(quat, nan=1.0)))
    valid = np.isfinite(quat).all(axis=1)
    roll_means, pitch_means, scored = np.full(n_windows, np.nan), np.full(n_windows, np.nan), np.zeros(n_windows, bool)
    for w in range(n_windows):
        rows = slice(w * window, (w + 1) * window)
        ok = valid[rows]
        if ok.mean() < MIN_VALID_REFERENCE:
            continue
        r, p = roll[rows][ok], pitch[rows][ok]
        roll_means[w], pitch_means[w] = wrap_aware_mean(r), float(p.mean())
        scored[w] = (w > 0 and np.abs(p).max() <= MAX_PITCH_DEGREES and np.abs(r).max() <= MAX_ROLL_DEGREES)
    return roll_means, pitch_means, scored


def block_window_means(client, trial: dict, filter_name: str, window: int, use_mag: bool,
                       params: dict | None = None):
    """roll_mean and pitch_mean of every window from /batch, 10 windows per request, state carried;
    `params`: block parameters beside the filter."""
    columns = [trial["acc"], trial["gyr"]] + ([trial["mag"]] if use_mag else [])
    raw = np.hstack(columns)
    axes = ["accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ"] + (["magX", "magY", "magZ"] if use_mag else [])
    n_windows = raw.shape[0] // window
    windows = raw[: n_windows * window].reshape(n_windows, window * len(axes))
    state, rows, labels = "", [], None
    for start in range(0, n_windows, WINDOWS_PER_BATCH):
        body = {"features": windows[start:start + WINDOWS_PER_BATCH].tolist(), "axes": axes,
                "sampling_freq": trial["fs"], "params": {**(params or {}), "filter": filter_name}, "state": state}
        answer = client.post("/blocks/kalman/batch", json=body).get_json()
        if not answer.get("success"):
            raise RuntimeError(f"{trial['name']} {filter_name}: {answer.get('error')}")
        rows.extend(answer["features"])
        labels, state = answer["labels"], answer["state"]
    features = np.array(rows)
    return features[:, labels.index("roll_mean")], features[:, labels.index("pitch_mean")]


def evaluate(client, trial: dict, filter_name: str, window_seconds: float = 2.0, use_mag: bool = False) -> dict:
    """RMS of the window-mean differences (deg) over the scored windows, and the bar's verdict."""
    window = int(round(window_seconds * trial["fs"]))
    started = time.perf_counter()
    roll, pitch = block_window_means(client, trial, filter_name, window, use_mag)
    elapsed = time.perf_counter() - started
    ref_roll, ref_pitch, scored = reference_windows(trial["quat"], window, len(roll))
    roll_rms = float(np.sqrt(np.mean(wrap_degrees(roll[scored] - ref_roll[scored]) ** 2)))
    pitch_rms = float(np.sqrt(np.mean((pitch[scored] - ref_pitch[scored]) ** 2)))
    return {"trial": trial["name"], "filter": filter_name, "mag": use_mag, "windows": len(roll),
            "scored": int(scored.sum()), "roll_rms": roll_rms, "pitch_rms": pitch_rms,
            "passes": roll_rms <= BAR_DEGREES and pitch_rms <= BAR_DEGREES, "seconds": elapsed}


def make_client():
    from dsp.fusion import kalman
    from dsp_server import create_app

    return create_app(blocks={"kalman": kalman.BLOCK}, root_block="kalman").test_client()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--filters", default=",".join(ORIENTATION_FILTERS))
    parser.add_argument("--mag", action="store_true", help="also map the magnetometer (9-axis)")
    parser.add_argument("--window-seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    paths = trial_paths()
    if not paths:
        print(f"No BROAD trials in {BROAD_DIR}", file=sys.stderr)
        return 2
    import logging

    client = make_client()
    # One access-log line per request would bury the table (set after the app configures it).
    logging.getLogger("dsp_server.access").setLevel(logging.WARNING)
    print(f"| filter | magnetometer | trial | windows scored | roll_mean RMS (deg) | pitch_mean RMS (deg) | "
          f"bar {BAR_DEGREES} deg | time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    all_pass = True
    for filter_name in args.filters.split(","):
        for path in paths:
            row = evaluate(client, load_trial(path), filter_name, args.window_seconds, args.mag)
            all_pass &= row["passes"]
            print(f"| {filter_name} | {'yes' if args.mag else 'no'} | {row['trial']} | "
                  f"{row['scored']} / {row['windows']} | {row['roll_rms']:.3f} | {row['pitch_rms']:.3f} | "
                  f"{'pass' if row['passes'] else 'FAIL'} | {row['seconds']:.1f} |", flush=True)
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
