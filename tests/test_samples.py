"""Multi-sensor samples from separate recordings (`python -m dsp.datasets.samples`, `make samples`).

The recordings are generated: one true time line, clicks on it (smooth bumps, so an IMU at a few
hundred Hz samples them too), a WAV whose sample k is at a known true time, and an IMU whose
oscillator runs some ppm fast, with jittered sampling instants and timestamps in a chosen clock
and unit. A click must land on the same output sample in the audio and in the IMU, and where the
true time line puts it, to within one output sample.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dsp.core.errors import ConfigurationError
from dsp.datasets import readers, samples

REPO = Path(__file__).resolve().parents[1]
CLICK_SIGMA_S = 0.012
UNIX_NS = 1_717_000_000_000_000_000  # 2024-05-29, in ns


@dataclass
class Recording:
    audio: Path
    imu: Path
    clicks: np.ndarray  # true times, s
    audio_t0: float     # true time of the audio's first sample, s


def bumps(t: np.ndarray, clicks: np.ndarray) -> np.ndarray:
    return sum(np.exp(-0.5 * ((t - c) / CLICK_SIGMA_S) ** 2) for c in clicks)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    samples = np.asarray(samples).reshape(len(samples), -1)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(samples.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes())
    return path


def write_csv(path: Path, columns: dict[str, np.ndarray], integer_time: bool = False) -> Path:
    names = list(columns)
    table = np.column_stack([columns[n] for n in names])
    lines = [",".join(names)]
    for row in table:
        cells = [str(int(row[0])) if integer_time else repr(float(row[0]))]
        cells += [f"{v:.6f}" for v in row[1:]]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_acquisition(path: Path, values: np.ndarray, sensors: list[tuple[str, str]], rate: float) -> Path:
    path.write_text(json.dumps({
        "protected": {"ver": "v1", "alg": "none"}, "signature": "0" * 64,
        "payload": {"device_type": "TEST", "interval_ms": 1000.0 / rate,
                    "sensors": [{"name": n, "units": u} for n, u in sensors],
                    "values": np.asarray(values).reshape(len(values), -1).tolist()}}))
    return path


def make_recording(directory: Path, seconds: float = 12.0, audio_rate: int = 16000, channels: int = 1,
                   imu_rate: float = 200.0, ppm: float = 300.0, jitter: float = 0.2,
                   audio_t0: float = 0.0, imu_begin: float = 0.5, imu_seconds: float | None = None,
                   clock_origin_s: float = 0.0, column: str = "timestamp", unit_s: float = 1e-3,
                   unix_ns: int | None = None, clicks: np.ndarray | None = None, seed: int = 0,
                   name: str = "imu") -> Recording:
    """A WAV and an IMU CSV of the same clicks.

    True time: the audio's sample k is at audio_t0 + k / audio_rate. The IMU samples from true
    time imu_begin at imu_rate * (1 + ppm 1e-6), each instant jittered by up to `jitter` of an
    interval, and writes the instant as its timestamp: (true time - clock_origin_s) / unit_s, or
    with unix_ns, unix_ns + true time in ns (integers).
    """
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    if clicks is None:
        clicks = audio_t0 + np.linspace(1.5, seconds - 1.5, 5)
    k = np.arange(int(seconds * audio_rate))
    t_audio = audio_t0 + k / audio_rate
    audio = np.stack([12000 * bumps(t_audio, clicks) * (1 - 0.3 * c) + rng.normal(0, 30, k.size)
                      for c in range(channels)], axis=1)
    audio_path = write_wav(directory / "rec.wav", audio, audio_rate)
    imu_seconds = seconds - imu_begin if imu_seconds is None else imu_seconds
    count = int(imu_seconds * imu_rate)
    true_rate = imu_rate * (1 + ppm * 1e-6)
    instants = imu_begin + np.arange(count) / true_rate + rng.uniform(-jitter / 2, jitter / 2, count) / true_rate
    acc_z = 9.81 + 4.0 * bumps(instants, clicks) + rng.normal(0, 0.002, count)
    acc_x = 0.5 * np.sin(2 * np.pi * 0.3 * instants)
    if unix_ns is not None:
        stamps = unix_ns + np.round(instants * 1e9)
        integer = True
    else:
        stamps = (instants - clock_origin_s) / unit_s
        integer = unit_s <= 1e-6
        if integer:
            stamps = np.round(stamps)
    imu_path = write_csv(directory / f"{name}.csv", {column: stamps, "accX": acc_x, "accZ": acc_z}, integer)
    return Recording(audio_path, imu_path, clicks, audio_t0)


def centroid(column: np.ndarray, around: float, rate: float) -> float:
    """The first moment of a bump (baseline removed) near row `around`."""
    half = int(4 * CLICK_SIGMA_S * rate)
    lo, hi = int(around) - half, int(around) + half
    window = column[max(lo, 0):hi] - np.median(column[max(lo - 2 * half, 0):hi + 2 * half])
    window = np.clip(window, 0, None)
    rows = np.arange(max(lo, 0), max(lo, 0) + window.size)
    return float((rows * window).sum() / window.sum())


def assert_clicks_aligned(plan: samples.Plan, recording: Recording, imu_axis: str = "accZ",
                          audio_axis: str | None = None) -> list[float]:
    """Each click's row in the audio and the IMU, and where the true time line puts it, agree
    within one output sample; returns the audio-IMU differences in samples."""
    audio = plan.values[:, plan.axes.index(audio_axis or plan.axes[0])]
    imu = plan.values[:, plan.axes.index(imu_axis)]
    differences = []
    for click in recording.clicks:
        expected = (click - recording.audio_t0 - plan.first_time) * plan.rate
        in_audio, in_imu = centroid(audio, expected, plan.rate), centroid(imu, expected, plan.rate)
        assert abs(in_audio - expected) < 1.0, (click, in_audio, expected)
        assert abs(in_imu - in_audio) < 1.0, (click, in_imu, in_audio)
        differences.append(in_imu - in_audio)
    return differences


def run(args: list, stderr: io.StringIO | None = None) -> tuple[int, str]:
    stream = stderr or io.StringIO()
    code = samples.main([str(a) for a in args], stderr=stream)
    return code, stream.getvalue()


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


# --- alignment ------------------------------------------------------------------------------------


def test_offset_start_and_crop_are_aligned_and_reported(tmp_path):
    # IMU timestamps in ms from the audio's first sample; the IMU starts 0.5 s in, ends 1 s early.
    rec = make_recording(tmp_path, seconds=12.0, imu_begin=0.5, imu_seconds=10.5, ppm=0.0)
    plan = samples.plan_samples(rec.audio, [rec.imu])
    assert plan.rate == 16000 and plan.axes == ["audio", "accX", "accZ"] and plan.units == ["wav", "N/A", "N/A"]
    assert 0.5 <= plan.first_time < 0.5 + 1 / 200 + 1 / 16000
    assert plan.values.shape[0] / 16000 == pytest.approx(10.5, abs=0.01)
    assert_clicks_aligned(plan, rec)
    report = "\n".join(plan.report)
    assert "rec.wav: dropped 0.50" in report and "s at the start and 1.00" in report
    assert "time column 'timestamp' in ms (s would also give a plausible rate" in report
    assert "200 Hz fitted over the file; no gaps" in report


def test_clock_drift_and_jitter_follow_the_timestamps_and_44k_audio_is_resampled(tmp_path):
    """The IMU's oscillator runs 300 ppm fast (200.06 Hz); over 40 s that is 12 ms, 190 output
    samples, if its nominal rate were trusted instead of its timestamps."""
    clicks = np.array([2.0, 9.0, 17.0, 25.0, 32.0, 38.5])
    rec = make_recording(tmp_path / "a", seconds=40.0, audio_rate=44100, imu_rate=200.0, ppm=300.0,
                         jitter=0.3, clicks=clicks, imu_begin=0.2)
    plan = samples.plan_samples(rec.audio, [rec.imu], out_rate=16000)
    assert plan.rate == 16000
    differences = assert_clicks_aligned(plan, rec)
    assert max(map(abs, differences)) < 1.0
    report = "\n".join(plan.report)
    assert "resample_poly, up/down 160/441" in report
    assert "200.06 Hz fitted over the file" in report
    # The same IMU readings with nominal timestamps (i / 200 Hz): the last click lands far off,
    # so the alignment above is the timestamps' doing.
    table = np.loadtxt(rec.imu, delimiter=",", skiprows=1)
    table[:, 0] = table[0, 0] + np.arange(len(table)) * 5.0
    np.savetxt(rec.imu, table, delimiter=",", header="timestamp,accX,accZ", comments="", fmt="%.6f")
    naive = samples.plan_samples(rec.audio, [rec.imu], out_rate=16000)
    audio, imu = naive.values[:, 0], naive.values[:, naive.axes.index("accZ")]
    last = (clicks[-1] - naive.first_time) * 16000
    assert abs(centroid(imu, last, 16000) - centroid(audio, last, 16000)) > 150


def test_audio_start_places_unix_nanosecond_timestamps(tmp_path):
    rec = make_recording(tmp_path, seconds=10.0, audio_t0=0.0, imu_begin=0.3, unix_ns=UNIX_NS, column="t_ns",
                         imu_rate=400.0, ppm=-200.0)
    plan = samples.plan_samples(rec.audio, [rec.imu], audio_start=str(UNIX_NS))
    assert_clicks_aligned(plan, rec)
    assert "time column 't_ns' in ns (as its name says)" in "\n".join(plan.report)
    # The same start with a unit; in seconds it is a float with all its digits.
    with_unit = samples.plan_samples(rec.audio, [rec.imu], audio_start=f"{UNIX_NS // 10**9}.000000000s")
    np.testing.assert_allclose(with_unit.values, plan.values)
    # Without --audio-start the Unix times are nowhere near the audio: said so.
    with pytest.raises(ConfigurationError, match="no overlap.*look like Unix time.*--audio-start"):
        samples.plan_samples(rec.audio, [rec.imu])


def test_bare_timestamp_column_in_nanoseconds_is_detected(tmp_path):
    # A bare 'timestamp' holding ns from the audio's start: ms would give 0.0004 Hz; ns and us
    # both give plausible rates (400 Hz, 0.4 Hz), and ns matches the audio's length.
    rec = make_recording(tmp_path, seconds=8.0, imu_rate=400.0, unit_s=1e-9, ppm=0.0)
    plan = samples.plan_samples(rec.audio, [rec.imu])
    assert_clicks_aligned(plan, rec)
    assert "'timestamp' in ns (us would also give a plausible rate" in "\n".join(plan.report)
    us = samples.plan_samples(rec.audio, [rec.imu], time_unit="ns")
    np.testing.assert_array_equal(us.values, plan.values)


def test_offset_ms_moves_the_audio(tmp_path):
    # The sensors' clock starts at true time 0; the audio started 250 ms later.
    rec = make_recording(tmp_path, seconds=10.0, audio_t0=0.25, imu_begin=0.0, imu_seconds=10.5,
                         clock_origin_s=0.0, column="time", unit_s=1.0, ppm=0.0)
    plan = samples.plan_samples(rec.audio, [rec.imu], offset_ms=250)
    assert_clicks_aligned(plan, rec)
    unshifted = samples.plan_samples(rec.audio, [rec.imu])
    with pytest.raises(AssertionError):
        assert_clicks_aligned(unshifted, rec)
    audio, imu = unshifted.values[:, 0], unshifted.values[:, unshifted.axes.index("accZ")]
    first = (rec.clicks[0] - rec.audio_t0 - unshifted.first_time) * 16000
    # Each IMU reading is put 250 ms (4000 samples) after its sound.
    assert centroid(imu, first + 4000, 16000) - centroid(audio, first, 16000) == pytest.approx(4000, abs=1)


# --- labels and files -----------------------------------------------------------------------------


def test_labels_give_one_file_per_segment_with_the_right_rows(tmp_path):
    rec = make_recording(tmp_path / "rec", seconds=10.0, imu_begin=0.0, imu_seconds=10.0, ppm=0.0,
                         audio_rate=8000)
    labels = tmp_path / "labels.txt"
    labels.write_text("1.000000\t2.500000\tgrind\n\\t8000.0\t100.0\n3.0\t3.25\tidle\n7.5\t9.98\tgrind\n")
    out = tmp_path / "samples"
    code, err = run(["--audio", rec.audio, "--sensors", rec.imu, "--labels", labels, "--out", out])
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["grind.rec.1.json", "grind.rec.3.json", "idle.rec.2.json"]
    plan = samples.plan_samples(rec.audio, [rec.imu], labels_path=labels)
    for name, (start, end) in [("grind.rec.1.json", (1.0, 2.5)), ("idle.rec.2.json", (3.0, 3.25)),
                               ("grind.rec.3.json", (7.5, 9.98))]:
        recording = readers.read_recording(out / name)
        assert recording.label == name.split(".")[0] and recording.sampling_freq == pytest.approx(8000)
        assert recording.values.shape == (round((end - start) * 8000), 3)
        rows = round(start * 8000) - round(plan.first_time * 8000)
        expected = plan.values[rows:rows + recording.values.shape[0]]
        np.testing.assert_array_equal(recording.values[:, 0], np.rint(expected[:, 0]))
        np.testing.assert_allclose(recording.values[:, 1:], expected[:, 1:], rtol=1e-6, atol=1e-6)
        # The audio is untouched at its own rate: the WAV's samples themselves.
        wav = readers.read_recording(rec.audio).values[round(start * 8000):round(end * 8000), 0]
        np.testing.assert_array_equal(recording.values[:, 0], wav)
    assert "grind.rec.1.json: 12000 samples (1.500 s) from 1.000 s" in err
    document = json.loads((out / "idle.rec.2.json").read_text())
    assert document["protected"]["ver"] == "v1" and document["protected"]["alg"] == "none"
    assert isinstance(document["protected"]["iat"], int) and document["signature"] == "0" * 64
    assert document["payload"]["interval_ms"] == 0.125
    assert document["payload"]["sensors"] == [{"name": "audio", "units": "wav"}, {"name": "accX", "units": "N/A"},
                                              {"name": "accZ", "units": "N/A"}]


def test_round_trip_through_readers_and_extract(tmp_path):
    rec = make_recording(tmp_path / "rec", seconds=4.0, imu_begin=0.0, imu_seconds=4.0, ppm=0.0)
    out = tmp_path / "out"
    code, err = run(["--audio", rec.audio, "--sensors", rec.imu, "--out", out, "--out-rate", 8000,
                     "--label", "tap"])
    assert code == 0, err
    (path,) = out.iterdir()
    assert path.name == "tap.rec.json"
    recording = readers.read_recording(path)
    plan = samples.plan_samples(rec.audio, [rec.imu], out_rate=8000)
    assert recording.label == "tap" and recording.axes == plan.axes and recording.sampling_freq == 8000
    np.testing.assert_allclose(recording.values[:, 1:], plan.values[:, 1:], rtol=1e-6, atol=1e-6)
    stream = readers.read_stream(path)
    assert stream.units == ["wav", "N/A", "N/A"]
    from dsp.datasets import extract
    from dsp.spectral import spectral_analysis

    features = tmp_path / "features"
    code = extract.main(["--block", "spectral-analysis", "--window-ms", "1000", "--axes", "accX,accZ",
                         "--out", str(features), str(out)], blocks={"spectral-analysis": spectral_analysis.BLOCK},
                        stderr=io.StringIO())
    assert code == 0 and np.load(features / "X.npy").shape[0] == 3
    assert json.loads((features / "labels.json").read_text())["classes"] == ["tap"]


def test_several_sensor_files_names_units_and_clashes(tmp_path):
    rec = make_recording(tmp_path, seconds=6.0, imu_begin=0.0, imu_seconds=6.0, ppm=0.0, name="left")
    t = np.arange(0.0, 6.2, 0.01)
    right = write_csv(tmp_path / "right.csv", {"time": t, "accX": np.cos(t), "gyrZ": 2.0 + 0.5 * t})
    lux = 100.0 + 10.0 * np.arange(60) / 10.0  # 10 Hz, no timestamps: starts with the audio
    light = write_acquisition(tmp_path / "light.json", np.column_stack([lux, np.zeros(60)]),
                              [("lux", "lx"), ("audio", "raw")], 10.0)
    plan = samples.plan_samples(rec.audio, [rec.imu, right, light])
    assert plan.axes == ["audio", "left_accX", "accZ", "right_accX", "gyrZ", "lux", "light_audio"]
    assert plan.units == ["wav", "N/A", "N/A", "N/A", "N/A", "lx", "raw"]
    instants = plan.first_time + np.arange(plan.values.shape[0]) / plan.rate
    np.testing.assert_allclose(plan.values[:, plan.axes.index("gyrZ")], 2.0 + 0.5 * instants, atol=1e-9)
    np.testing.assert_allclose(plan.values[:, plan.axes.index("lux")], 100.0 + 10.0 * instants, atol=1e-9)
    assert instants[-1] <= 5.9 + 1e-9  # the JSON's last sample, at 59 / 10 Hz
    assert_clicks_aligned(plan, rec)
    report = "\n".join(plan.report)
    assert "light.json: 60 samples, 2 axes (lux, light_audio); no timestamps: 10 Hz from interval_ms" in report
    assert "right.csv: 620 samples" in report and "'time' in s" in report


def test_multichannel_wav(tmp_path):
    rec = make_recording(tmp_path, seconds=5.0, channels=2, imu_begin=0.0, ppm=0.0, audio_rate=22050)
    plan = samples.plan_samples(rec.audio, [rec.imu], out_rate=16000)
    assert plan.axes[:2] == ["audio0", "audio1"] and plan.units[:2] == ["wav", "wav"]
    assert_clicks_aligned(plan, rec, audio_axis="audio0")
    assert_clicks_aligned(plan, rec, audio_axis="audio1")
    peak = np.argmax(plan.values[:, 0])
    assert plan.values[peak, 1] / plan.values[peak, 0] == pytest.approx(0.7, abs=0.01)


def test_audio_resampling_removes_what_the_output_rate_cannot_hold(tmp_path):
    # 44.1 kHz to 16 kHz: a 1 kHz tone passes, an 11 kHz one (above the new 8 kHz Nyquist) would
    # alias to 5 kHz with plain decimation and must be filtered out instead.
    t = np.arange(2 * 44100) / 44100
    audio = write_wav(tmp_path / "rec.wav", np.column_stack([10000 * np.sin(2 * np.pi * 1000 * t),
                                                             10000 * np.sin(2 * np.pi * 11000 * t)]), 44100)
    imu = write_csv(tmp_path / "imu.csv", {"t": np.arange(0, 2.01, 0.01), "accX": np.zeros(201)})
    plan = samples.plan_samples(audio, [imu], out_rate=16000)
    middle = plan.values[1000:-1000]
    rms = np.sqrt((middle[:, :2] ** 2).mean(axis=0))
    assert rms[0] == pytest.approx(10000 / np.sqrt(2), rel=0.01)
    assert rms[1] < 0.001 * 10000


def test_gaps_are_counted_and_the_longest_reported(tmp_path):
    t = np.concatenate([np.arange(0, 2, 0.01), np.arange(2.05, 4, 0.01), np.arange(4.3, 6, 0.01)])
    imu = write_csv(tmp_path / "imu.csv", {"t_s": t, "accX": np.sin(t)})
    audio = write_wav(tmp_path / "rec.wav", np.zeros(6 * 8000), 8000)
    report = "\n".join(samples.plan_samples(audio, [imu]).report)
    assert "2 gaps (intervals over 1.5x the median), the longest 310.000 ms at 3.990 s" in report


# --- bad input ------------------------------------------------------------------------------------


@pytest.fixture
def good(tmp_path):
    return make_recording(tmp_path / "rec", seconds=3.0, imu_begin=0.0, imu_seconds=3.0, ppm=0.0)


def _fails(tmp_path, args: list, *expected: str) -> str:
    out = tmp_path / "out"
    code, err = run([*args, "--out", out])
    line = one_line_error(err)
    assert code == 1
    for text in expected:
        assert text in line, line
    assert_nothing_written(out)
    return line


def test_no_overlap(tmp_path, good):
    late = make_recording(tmp_path / "late", seconds=3.0, imu_begin=5.0, imu_seconds=2.0, name="late")
    _fails(tmp_path, ["--audio", good.audio, "--sensors", late.imu], "late.csv: no overlap with the other streams",
           "it covers 5.0")


def test_non_monotonic_timestamps(tmp_path, good):
    (tmp_path / "back.csv").write_text("timestamp,accX\n0,1\n10,2\n5,3\n20,4\n")
    _fails(tmp_path, ["--audio", good.audio, "--sensors", tmp_path / "back.csv"],
           "back.csv: the timestamps must increase; data row 3 does not")


@pytest.mark.parametrize("name, content, role, expected", [
    ("text.wav", b"timestamp,accX\n0,1\n", "audio", "text.wav: not a readable WAV file"),
    ("binary.csv", bytes(range(256)) * 4, "sensor", "binary.csv: not a text CSV file"),
    ("other.json", b'{"name": "not an acquisition file"}', "sensor", "other.json: no 'payload' object"),
    ("list.json", b"[1, 2, 3]", "sensor", "list.json: no 'payload' object"),
    ("broken.json", b'{"payload": ', "sensor", "broken.json: not valid JSON"),
    ("empty.wav", b"", "audio", "empty.wav: the file is empty"),
    ("empty.csv", b"", "sensor", "empty.csv: the file is empty"),
    ("empty.json", b"", "sensor", "empty.json: the file is empty"),
    ("header.csv", b"timestamp,accX\n", "sensor", "header.csv: no rows after the header"),
    ("audio.csv", b"timestamp,accX\n0,1\n", "audio", "audio.csv: the audio must be a WAV file"),
    ("sound.wav", None, "sensor", "sound.wav: a sensor file must be CSV (.csv) or acquisition JSON"),
])
def test_files_that_are_not_what_they_say(tmp_path, good, name, content, role, expected):
    path = tmp_path / name
    if content is None:
        path.write_bytes(good.audio.read_bytes())
    else:
        path.write_bytes(content)
    audio, sensor = (path, good.imu) if role == "audio" else (good.audio, path)
    _fails(tmp_path, ["--audio", audio, "--sensors", sensor], expected)


@pytest.mark.parametrize("content, expected", [
    ("0.5\t4.0\tgrind\n", "line 1: 'grind' (0.5 to 4 s) is outside the recording (0 to 3.000 s"),
    ("1.0\t2.0\tidle\n-0.5\t1.0\tgrind\n", "line 2: 'grind' (-0.5 to 1 s) is outside the recording"),
    ("2.0\t1.0\tgrind\n", "line 1: 'grind' ends (1 s) before it starts (2 s)"),
    ("1.0\t1.0\tgrind\n", "line 1: 'grind' ends (1 s) before it starts (1 s)"),
    ("1.0\t2.0\n", "line 1: the label is empty"),
    ("one\ttwo\tgrind\n", "line 1: expected 'start<TAB>end<TAB>label'"),
    ("1.0\t2.0\tgrind.fast\n", "line 1: the label 'grind.fast' cannot name a file"),
    ("\n\n", "no labels in the file"),
    ("", "the label file is empty"),
])
def test_bad_labels(tmp_path, good, content, expected):
    labels = tmp_path / "labels.txt"
    labels.write_text(content)
    _fails(tmp_path, ["--audio", good.audio, "--sensors", good.imu, "--labels", labels], "labels.txt: ", expected)


def test_label_outside_the_span_every_stream_covers(tmp_path):
    rec = make_recording(tmp_path / "rec", seconds=4.0, imu_begin=1.0, imu_seconds=3.0)
    labels = tmp_path / "labels.txt"
    labels.write_text("0.2\t2.0\tgrind\n")
    _fails(tmp_path, ["--audio", rec.audio, "--sensors", rec.imu, "--labels", labels],
           "line 1: 'grind' (0.2 to 2 s) reaches outside the 1.00", "that every stream covers")


def test_units_and_options(tmp_path, good):
    base = ["--audio", good.audio, "--sensors", good.imu]
    _fails(tmp_path, [*base, "--time-unit", "min"], "--time-unit must be one of s, ms, us, ns; got 'min'")
    _fails(tmp_path, [*base, "--audio-start", "12 parsecs"], "--audio-start must be a time in the sensors' clock")
    _fails(tmp_path, [*base, "--out-rate", "0"], "--out-rate must be a positive number of Hz")
    (tmp_path / "ms.csv").write_text("t_ms,accX\n" + "".join(f"{i * 500000},{i}\n" for i in range(20)))
    _fails(tmp_path, ["--audio", good.audio, "--sensors", tmp_path / "ms.csv"],
           "ms.csv: the time column 't_ms' is in ms by its name", "pass --time-unit")
    (tmp_path / "odd.csv").write_text("time,accX\n" + "".join(f"{i * 1e-7:.9f},{i}\n" for i in range(20)))
    _fails(tmp_path, ["--audio", good.audio, "--sensors", tmp_path / "odd.csv"],
           "odd.csv: cannot tell the unit of the time column 'time'")
    (tmp_path / "plain.csv").write_text("accX\n1\n2\n")
    _fails(tmp_path, ["--audio", good.audio, "--sensors", tmp_path / "plain.csv"],
           "plain.csv: no time column", "--rate")
    seconds = write_csv(tmp_path / "sec.csv", {"t_s": np.arange(0, 3, 0.01), "accY": np.zeros(300)})
    _fails(tmp_path, [*base, seconds, "--audio-start", "5"],
           "timestamps are in different units (", "give its unit, e.g. 5ms")


def test_existing_output_files_are_replaced_and_others_kept(tmp_path, good):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.json").write_text("{}")
    for _ in range(2):
        code, err = run(["--audio", good.audio, "--sensors", good.imu, "--out", out, "--quiet"])
        assert code == 0 and err == ""
    assert sorted(p.name for p in out.iterdir()) == ["keep.json", "rec.rec.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


# --- the command line and the Makefile ------------------------------------------------------------


def test_make_samples_target(tmp_path, good):
    """`make samples` with the repository's Makefile, run from a scratch directory: OUT defaults to
    `samples` there (not `features`), SENSORS takes several files. VENV names a scratch directory
    whose fresh `.installed` marker (and -o) leaves `install` nothing to do; BIN is this
    interpreter's directory."""
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".installed").touch()
    other = write_acquisition(tmp_path / "light.json", np.full((40, 1), 5.0), [("lux", "lx")], 10.0)
    labels = tmp_path / "labels.txt"
    labels.write_text("0.5\t1.5\tidle\n2.0\t2.5\tgrind\n")
    command = ["make", "-s", "-f", str(REPO / "Makefile"), "-o", f"{venv}/.installed", "samples", f"VENV={venv}",
               f"BIN={Path(sys.executable).parent}", f"AUDIO={good.audio}", f"SENSORS={good.imu} {other}",
               f"LABELS={labels}", "RATE=8000", "OFFSET_MS=0"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 2 files to samples" in done.stderr
    out = tmp_path / "samples"
    assert sorted(p.name for p in out.iterdir()) == ["grind.rec.2.json", "idle.rec.1.json"]
    recording = readers.read_recording(out / "idle.rec.1.json")
    assert recording.sampling_freq == 8000 and recording.axes == ["audio", "accX", "accZ", "lux"]
    assert recording.values.shape[0] == 8000
    done = subprocess.run([*command, "OUT=mine"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "mine").iterdir())) == 2
    failed = subprocess.run([*command, "OUT=other", f"LABELS={tmp_path / 'missing.txt'}"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode != 0 and "missing.txt: cannot read the label file" in failed.stderr
    assert not (tmp_path / "other").exists()
