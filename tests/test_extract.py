"""Offline feature extraction (`python -m dsp.datasets.extract`): readers, windowing, parity with `/batch`.

Every feature matrix is checked against what the server's `/batch` returns for the same windows,
cut here independently (plain slicing), so the CLI gives exactly what Studio would get from the
server for the same sample, window size and increase.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from dsp.audio import mfe, spectrogram
from dsp.core.errors import ConfigurationError
from dsp.datasets import extract, readers
from dsp.fusion import kalman
from dsp.spectral import spectral_analysis
from dsp_server import create_app
from tests.imu_stream import make_imu_stream

REPO = Path(__file__).resolve().parents[1]
BLOCKS = {block.name: block for block in (spectrogram.BLOCK, mfe.BLOCK, spectral_analysis.BLOCK, kalman.BLOCK)}


# --- writers for small datasets ---------------------------------------------------------------


def write_acquisition(path: Path, values: np.ndarray, names: list[str], rate: float, flat: bool = False) -> Path:
    rows = values[:, 0].tolist() if flat else values.tolist()
    document = {
        "protected": {"ver": "v1", "alg": "none"},
        "signature": "0" * 64,
        "payload": {"device_type": "TEST", "interval_ms": 1000.0 / rate,
                    "sensors": [{"name": n, "units": "N/A"} for n in names], "values": rows},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def write_csv(path: Path, values: np.ndarray, names: list[str], rate: float,
              time_column: str = "timestamp", time_scale: float = 1000.0) -> Path:
    times = np.arange(values.shape[0]) * time_scale / rate
    lines = [",".join([time_column, *names])]
    lines += [",".join(repr(float(v)) for v in (t, *row)) for t, row in zip(times, values)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_wav_int16(path: Path, samples: np.ndarray, rate: int) -> Path:
    samples = samples.reshape(samples.shape[0], -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(samples.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())
    return path


def tone(seconds: float, rate: float, freq: float, seed: int, axes: int = 1) -> np.ndarray:
    """Integer-valued test audio: a tone plus noise, (samples, axes)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    columns = [np.round(6000 * np.sin(2 * np.pi * freq * (k + 1) * t) + rng.normal(0, 300, t.size))
               for k in range(axes)]
    return np.stack(columns, axis=1)


# --- helpers ----------------------------------------------------------------------------------


def run(args: list[str], tty: bool = False) -> tuple[int, str]:
    stream = _Terminal() if tty else io.StringIO()
    code = extract.main([str(a) for a in args], blocks=BLOCKS, stderr=stream)
    return code, stream.getvalue()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def outputs(out: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    return np.load(out / "X.npy"), np.load(out / "y.npy"), json.loads((out / "labels.json").read_text())


def cut(values: np.ndarray, window: int, increase: int) -> list[np.ndarray]:
    """Studio's windows of one recording, the obvious way."""
    return [values[start:start + window] for start in range(0, values.shape[0] - window + 1, increase)]


def batch(block_name: str, windows: list[np.ndarray], axes: list[str], rate: float, params: dict,
          named_axes: dict | None = None) -> np.ndarray:
    client = create_app(blocks=BLOCKS, root_block=block_name).test_client()
    body = {"features": [w.reshape(-1).tolist() for w in windows], "axes": axes, "sampling_freq": rate,
            "params": params, "state": ""}
    if named_axes is not None:
        body["named_axes"] = named_axes
    answer = client.post(f"/blocks/{block_name}/batch", json=body).get_json()
    assert answer["success"], answer
    return np.asarray(answer["features"], dtype=np.float64)


def assert_same_features(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected.astype(np.float32), rtol=1e-6, atol=1e-6)


# --- readers ----------------------------------------------------------------------------------


def test_acquisition_json_reader_gives_values_axes_rate_and_label(tmp_path):
    values = np.array([[1.0, -2.5], [3.0, 4.25], [5.0, 6.0]])
    path = write_acquisition(tmp_path / "idle.s1.a7.json", values, ["audio", "accX"], 250.0)
    recording = readers.read_recording(path)
    np.testing.assert_array_equal(recording.values, values)
    assert recording.axes == ["audio", "accX"]
    assert recording.sampling_freq == pytest.approx(250.0)
    assert recording.label == "idle"

    flat_file = write_acquisition(tmp_path / "noise.json", values[:, :1], ["audio"], 16000, flat=True)
    flat = readers.read_recording(flat_file)
    np.testing.assert_array_equal(flat.values, values[:, :1])
    assert flat.label == "noise"


def test_coffee_dataset_files_read_back_like_its_own_reader(tmp_path):
    from models.coffee_dataset import generate, read_acquisition_json, write_acquisition_json

    [path, *_] = write_acquisition_json(generate(n_machines=1, windows_per_stage=1, seed=1), tmp_path, 8000)
    label, rate, names, values = read_acquisition_json(path)
    recording = readers.read_recording(path)
    np.testing.assert_array_equal(recording.values, values)
    assert (recording.label, recording.sampling_freq, recording.axes) == (label, rate, names)


def test_csv_reader_takes_the_rate_from_timestamps_in_ms_or_seconds(tmp_path):
    values = np.arange(30, dtype=np.float64).reshape(10, 3)
    ms = readers.read_recording(write_csv(tmp_path / "walk.1.csv", values, ["accX", "accY", "accZ"], 62.5))
    seconds = readers.read_recording(write_csv(tmp_path / "run.csv", values, ["a", "b", "c"], 50.0, "time", 1.0))
    np.testing.assert_array_equal(ms.values, values)
    assert ms.axes == ["accX", "accY", "accZ"] and ms.label == "walk"
    assert ms.sampling_freq == pytest.approx(62.5)
    assert seconds.sampling_freq == pytest.approx(50.0)


@pytest.mark.parametrize("column, scale", [("t_ns", 1e9), ("timestamp_us", 1e6), ("Time_MS", 1e3),
                                           ("seconds", 1.0), ("t", 1.0)])
def test_csv_time_column_units_from_the_name(tmp_path, column, scale):
    values = np.arange(20, dtype=np.float64).reshape(10, 2)
    recording = readers.read_recording(write_csv(tmp_path / "a.csv", values, ["x", "y"], 200.0, column, scale))
    assert recording.axes == ["x", "y"] and recording.sampling_freq == pytest.approx(200.0)


def test_read_stream_keeps_the_time_column_and_units(tmp_path):
    values = np.arange(20, dtype=np.float64).reshape(10, 2)
    stream = readers.read_stream(write_csv(tmp_path / "a.csv", values, ["x", "y"], 200.0, "t_ns", 1e9))
    assert stream.time_column == "t_ns" and stream.units == ["N/A", "N/A"] and stream.sampling_freq is None
    np.testing.assert_allclose(stream.times, np.arange(10) * 5e6)
    np.testing.assert_array_equal(stream.values, values)
    json_path = write_acquisition(tmp_path / "b.json", values, ["accX", "accY"], 100.0)
    stream = readers.read_stream(json_path)
    assert stream.times is None and stream.sampling_freq == pytest.approx(100.0) and stream.units == ["N/A"] * 2
    wav = readers.read_stream(write_wav_int16(tmp_path / "c.wav", tone(0.1, 8000, 100, seed=1, axes=2), 8000))
    assert wav.axes == ["audio0", "audio1"] and wav.units == ["wav", "wav"] and wav.sampling_freq == 8000
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(ConfigurationError, match="empty.csv: the file is empty"):
        readers.read_stream(tmp_path / "empty.csv")


def test_csv_without_a_time_column_needs_a_rate(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("accX,accY\n1,2\n3,4\n5,6\n")
    with pytest.raises(ConfigurationError, match="no time column.*--rate"):
        readers.read_recording(path)
    assert readers.read_recording(path, default_rate=20.0).sampling_freq == 20.0


def test_wav_reader_scales_every_sample_format_to_int16_values(tmp_path):
    from scipy.io import wavfile

    samples = np.array([[0, 100], [-32768, 32767], [1234, -5]], dtype=np.int16)
    stereo = readers.read_recording(write_wav_int16(tmp_path / "hum.wav", samples, 8000))
    np.testing.assert_array_equal(stereo.values, samples.astype(np.float64))
    assert stereo.axes == ["audio0", "audio1"] and stereo.sampling_freq == 8000 and stereo.label == "hum"

    mono = readers.read_recording(write_wav_int16(tmp_path / "m.wav", samples[:, 0], 16000))
    assert mono.axes == ["audio"] and mono.values.shape == (3, 1)

    wavfile.write(tmp_path / "f.wav", 16000, np.array([0.5, -1.0, 0.25], dtype=np.float32))
    np.testing.assert_array_equal(readers.read_recording(tmp_path / "f.wav").values[:, 0], [16384, -32768, 8192])
    wavfile.write(tmp_path / "u.wav", 16000, np.array([128, 0, 255], dtype=np.uint8))
    np.testing.assert_array_equal(readers.read_recording(tmp_path / "u.wav").values[:, 0], [0, -32768, 32512])


def test_find_recordings_walks_directories_and_ignores_other_files(tmp_path):
    write_acquisition(tmp_path / "b" / "deep" / "x.1.json", np.zeros((2, 1)), ["a"], 10)
    write_csv(tmp_path / "a.csv", np.zeros((2, 1)), ["a"], 10)
    (tmp_path / "notes.txt").write_text("not data")
    (tmp_path / ".hidden.json").write_text("{}")
    names = [name for _, name in readers.find_recordings([tmp_path])]
    assert names == ["a.csv", "b/deep/x.1.json"]


# --- parity with /batch, windowing ------------------------------------------------------------


@pytest.mark.parametrize("batch_windows", [3, None])
def test_acquisition_json_through_spectrogram_equals_batch(tmp_path, batch_windows):
    rate = 4000.0
    long = tone(2.5, rate, 440, seed=1, axes=2)  # audio + a second axis the block must not see
    data = tmp_path / "data"
    write_acquisition(data / "idle.a1.json", long, ["audio", "accX"], rate)
    write_acquisition(data / "noise.b2.json", tone(1.2, rate, 1000, seed=2), ["audio"], rate, flat=True)
    write_acquisition(data / "sub" / "idle.c3.json", tone(3.0, rate, 700, seed=3), ["audio"], rate)
    params = {"fft-length": 128, "frame-length": 0.032, "frame-stride": 0.016}
    out = tmp_path / "out"
    batching = [] if batch_windows is None else ["--batch", batch_windows]  # 3: batches span recordings
    code, err = run(["--block", "spectrogram", "--params", json.dumps(params), "--window-ms", 1000,
                     "--increase-ms", 500, "--axes", "audio", *batching, "--out", out, data])
    assert code == 0, err
    X, y, meta = outputs(out)

    expected, offsets = [], []
    for name in ("idle.a1.json", "noise.b2.json", "sub/idle.c3.json"):
        recording = readers.read_recording(data / name)
        windows = cut(recording.values[:, :1], 4000, 2000)
        expected.append(batch("spectrogram", windows, ["audio"], rate, params))
        offsets += [(name, 500.0 * i) for i in range(len(windows))]
    assert_same_features(X, np.concatenate(expected))
    assert [len(e) for e in expected] == [4, 1, 5]
    assert [(w["file"], w["offset_ms"]) for w in meta["windows"]] == offsets
    assert meta["classes"] == ["idle", "noise"]
    assert y.tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert meta["output_config"]["type"] == "spectrogram"
    assert meta["params"]["fft_length"] == 128 and meta["block"] == "spectrogram"
    assert meta["implementation_version"] == spectrogram.BLOCK.latest_version


def test_csv_through_spectral_analysis_per_window_equals_batch(tmp_path):
    rate = 100.0
    rng = np.random.default_rng(5)
    walk = np.round(rng.normal(0, 2, (450, 3)), 3)
    still = np.round(rng.normal(0, 0.1, (300, 3)) + [0, 0, 9.81], 3)
    write_csv(tmp_path / "data" / "walk.csv", walk, ["accX", "accY", "accZ"], rate)
    write_csv(tmp_path / "data" / "still.csv", still, ["accX", "accY", "accZ"], rate)
    params = {"fft-length": 64, "filter-type": "low", "filter-cutoff": 20}
    code, err = run(["--block", "spectral-analysis", "--params", json.dumps(params), "--window-ms", 2000,
                     "--increase-ms", 800, "--out", tmp_path / "out", tmp_path / "data"])
    assert code == 0, err
    X, y, meta = outputs(tmp_path / "out")
    # Files are read in sorted order: still.csv, then walk.csv.
    expected = np.concatenate([batch("spectral-analysis", cut(values, 200, 80), ["accX", "accY", "accZ"], rate, params)
                               for values in (still, walk)])
    assert_same_features(X, expected)
    assert len(X) == 2 + 4
    assert y.tolist() == [0, 0, 1, 1, 1, 1] and meta["classes"] == ["still", "walk"]
    assert meta["feature_labels"] and len(meta["feature_labels"]) <= X.shape[1]


def test_wav_through_mfe_equals_batch_and_channel_selection(tmp_path):
    rate = 8000
    stereo = tone(1.5, rate, 300, seed=7, axes=2)
    write_wav_int16(tmp_path / "data" / "siren.1.wav", stereo, rate)
    write_wav_int16(tmp_path / "data" / "hum.2.wav", tone(1.0, rate, 120, seed=8)[:, 0], rate)
    code, err = run(["--block", "mfe", "--params", '{"num_filters": 32}', "--window-ms", 1000, "--increase-ms",
                     250, "--axes", "audio1", "--out", tmp_path / "a", tmp_path / "data" / "siren.1.wav"])
    assert code == 0, err
    X, _, meta = outputs(tmp_path / "a")
    assert_same_features(X, batch("mfe", cut(stereo[:, 1:], 8000, 2000), ["audio"], rate, {"num_filters": 32}))
    assert len(X) == 3 and meta["classes"] == ["siren"]

    code, err = run(["--block", "mfe", "--window-ms", 1000, "--axes", "audio", "--out", tmp_path / "b",
                     tmp_path / "data" / "siren.1.wav"])
    assert code == 1 and "siren.1.wav" in err and "no axis 'audio'" in err


def test_short_recordings_are_zero_padded_or_skipped(tmp_path):
    rate = 4000.0
    short = tone(0.6, rate, 500, seed=4)
    write_acquisition(tmp_path / "data" / "beep.json", short, ["audio"], rate)
    write_acquisition(tmp_path / "data" / "long.json", tone(1.0, rate, 500, seed=5), ["audio"], rate)

    code, err = run(["--block", "spectrogram", "--window-ms", 1000, "--out", tmp_path / "pad", tmp_path / "data"])
    assert code == 0, err
    X, y, meta = outputs(tmp_path / "pad")
    padded = np.vstack([short, np.zeros((4000 - len(short), 1))])
    assert_same_features(X[:1], batch("spectrogram", [padded], ["audio"], rate, {}))
    assert [w["padded"] for w in meta["windows"]] == [True, False]
    assert meta["classes"] == ["beep", "long"]

    code, err = run(["--block", "spectrogram", "--window-ms", 1000, "--short", "skip", "--out", tmp_path / "skip",
                     tmp_path / "data"])
    assert code == 0, err
    X, y, meta = outputs(tmp_path / "skip")
    assert len(X) == 1 and meta["skipped"] == ["beep.json"] and meta["classes"] == ["long"]

    code, err = run(["--block", "spectrogram", "--window-ms", 1000, "--short", "skip", "--out", tmp_path / "none",
                     tmp_path / "data" / "beep.json"])
    assert code == 1 and "No windows" in err and not (tmp_path / "none" / "X.npy").exists()


def test_windowing_counts_and_offsets_at_exact_boundaries():
    windowing = extract.Windowing(window_ms=1000, increase_ms=300)
    values = np.arange(2300, dtype=np.float64).reshape(-1, 1)
    windows, starts, padded = windowing.cut(values, 1000.0)
    assert starts.tolist() == [0, 300, 600, 900, 1200]  # the next would end at 2500 > 2300
    assert not padded
    for window, start in zip(windows, starts):
        np.testing.assert_array_equal(window[:, 0], np.arange(start, start + 1000))
    exact = windowing.cut(values[:1000], 1000.0)[1]
    assert exact.tolist() == [0]


# --- stateful blocks --------------------------------------------------------------------------


def test_stateful_block_threads_state_within_a_recording_and_restarts_per_recording(tmp_path):
    rate = 100.0
    first, second = make_imu_stream(seconds=6.0, fs=rate, seed=1), make_imu_stream(seconds=5.0, fs=rate, seed=2)
    columns = ["ax", "ay", "az", "gx", "gy", "gz"]
    for name, stream in (("tilt.a.csv", first), ("tilt.b.csv", second)):
        write_csv(tmp_path / "data" / name, np.hstack([stream.acc, stream.gyr]), columns, rate)
    named = dict(zip(["accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ"], columns))
    code, err = run(["--block", "kalman", "--params", '{"filter": "ekf"}', "--window-ms", 2000,
                     "--increase-ms", 500, "--axes", json.dumps(named), "--out", tmp_path / "out", tmp_path / "data"])
    assert code == 0, err
    X, _, meta = outputs(tmp_path / "out")
    # Overlapping windows: the block's window increase follows --increase-ms unless given.
    assert meta["params"]["window-increase-ms"] == 500
    params = {"filter": "ekf", "window-increase-ms": 500}
    recordings = [np.hstack([s.acc, s.gyr]) for s in (first, second)]
    per_recording = [batch("kalman", cut(r, 200, 50), columns, rate, params, named) for r in recordings]
    assert [len(p) for p in per_recording] == [9, 7]
    assert_same_features(X, np.concatenate(per_recording))
    # Continuing the first recording's state into the second would change its features.
    continued = batch("kalman", cut(recordings[0], 200, 50) + cut(recordings[1], 200, 50), columns, rate, params, named)
    assert np.abs(continued[9] - per_recording[1][0]).max() > 1e-3


def counting_block():
    """A stateful block with a vectorised path: feature = windows seen before this one in the
    stream (kept in the state) and the window's first sample. Records which path ran."""
    from dsp.core.block import BatchFeatures, Block, Features

    parameters = {"info": {"title": "Counter", "author": "Tests", "usesState": True,
                           "latestImplementationVersion": 1}, "parameters": []}
    calls = []

    def compute(req):
        calls.append("compute")
        seen = int(req.state or 0)
        return Features(features=np.array([seen, req.raw[0, 0]]), labels=["seen", "first"],
                        output_config={"type": "flat", "shape": {"width": 2}}, state=str(seen + 1))

    def compute_batch(req):
        calls.append(len(req.raw))
        seen = int(req.state or 0) + np.arange(len(req.raw))
        return BatchFeatures(features=np.column_stack([seen, req.raw[:, 0, 0]]), labels=["seen", "first"],
                             output_config={"type": "flat", "shape": {"width": 2}}, fft_used=[],
                             state=str(int(seen[-1]) + 1))

    return Block(name="counter", parameters=parameters, compute=compute, compute_batch=compute_batch), calls


def test_stateful_block_with_compute_batch_runs_batches_per_recording(tmp_path):
    block, calls = counting_block()
    for name, length in (("a.csv", 10), ("b.csv", 7)):
        write_csv(tmp_path / "data" / name, np.arange(length, dtype=np.float64)[:, None] + 100, ["v"], 1000.0)
    code = extract.main(["--block", "counter", "--window-ms", "3", "--increase-ms", "2", "--batch", "3",
                         "--out", str(tmp_path / "out"), str(tmp_path / "data")],
                        blocks={"counter": block}, stderr=io.StringIO())
    assert code == 0
    X = np.load(tmp_path / "out" / "X.npy")
    # a.csv: windows start at 0, 2, 4, 6 (4 windows); b.csv: at 0, 2, 4. The count restarts per file.
    np.testing.assert_array_equal(X, [[0, 100], [1, 102], [2, 104], [3, 106], [0, 100], [1, 102], [2, 104]])
    assert calls == [3, 1, 3]


def test_overlap_warning_when_window_increase_parameter_disagrees(tmp_path):
    stream = make_imu_stream(seconds=3.0, fs=100.0, seed=1)
    write_csv(tmp_path / "x.csv", np.hstack([stream.acc, stream.gyr]),
              ["accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ"], 100.0)
    code, err = run(["--block", "kalman", "--params", '{"window-increase-ms": 0}', "--window-ms", 2000,
                     "--increase-ms", 500, "--out", tmp_path / "out", tmp_path / "x.csv"])
    assert code == 0 and "warning: 'window-increase-ms' is 0" in err


# --- labels -----------------------------------------------------------------------------------


def test_label_map_and_class_order(tmp_path):
    rate = 1000.0
    for index in range(3):
        write_acquisition(tmp_path / "data" / f"rec{index}.json", tone(1.0, rate, 50 + 30 * index, seed=index),
                          ["audio"], rate)
    (tmp_path / "labels.csv").write_text("file,label\nrec0.json,open\nrec1.json,closed\nrec2.json,open\n")
    args = ["--block", "spectrogram", "--window-ms", 1000, "--labels", tmp_path / "labels.csv"]
    code, err = run([*args, "--out", tmp_path / "a", tmp_path / "data"])
    assert code == 0, err
    _, y, meta = outputs(tmp_path / "a")
    assert meta["classes"] == ["closed", "open"] and y.tolist() == [1, 0, 1]

    code, err = run([*args, "--classes", "open,closed,ajar", "--out", tmp_path / "b", tmp_path / "data"])
    assert code == 0, err
    assert outputs(tmp_path / "b")[1].tolist() == [0, 1, 0]
    earlier = str(tmp_path / "b" / "labels.json")
    code, err = run([*args, "--classes", earlier, "--out", tmp_path / "c", tmp_path / "data"])
    assert code == 0 and outputs(tmp_path / "c")[2]["classes"] == ["open", "closed", "ajar"]

    code, err = run([*args, "--classes", "open", "--out", tmp_path / "d", tmp_path / "data"])
    assert code == 1 and "'closed'" in err
    (tmp_path / "labels.csv").write_text("rec0.json,open\n")
    code, err = run([*args, "--out", tmp_path / "e", tmp_path / "data"])
    assert code == 1 and "rec1.json: not in the label map" in err


# --- errors -----------------------------------------------------------------------------------


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("name, content, expected", [
    ("broken.json", b'{"payload": {"interval_ms": 1, "sensors": [', "not valid JSON"),
    ("ragged.json", json.dumps({"payload": {"interval_ms": 1, "sensors": [{"name": "a"}, {"name": "b"}],
                                            "values": [[1, 2], [3], [4, 5, 6]]}}).encode(), "2 numbers"),
    ("text.json", json.dumps({"payload": {"interval_ms": 1, "sensors": [{"name": "a"}],
                                          "values": [1, "x"]}}).encode(), "only numbers"),
    ("rate.json", json.dumps({"payload": {"interval_ms": 0, "sensors": [{"name": "a"}],
                                          "values": [1, 2]}}).encode(), "interval_ms"),
    ("broken.wav", b"RIFF\x10\x00\x00\x00WAVEjunk", "not a readable WAV"),
    ("cells.csv", b"timestamp,accX\n0,1\n10,oops\n", "expected a number"),
    ("back.csv", b"timestamp,accX\n0,1\n10,2\n5,3\n", "timestamps must increase"),
    ("nan.csv", b"timestamp,accX\n0,1\n10,nan\n", "expected finite numbers"),
    ("binary.csv", b"timestamp,accX\n\xff\xfe\x00\x01\x02", "not a text CSV file (byte 0xff at offset 15"),
])
def test_bad_files_give_one_line_naming_the_file(tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    code, err = run(["--block", "spectrogram", "--window-ms", 1000, "--out", tmp_path / "out", tmp_path])
    line = _one_line(err)
    assert code == 1 and name in line and expected in line
    assert not (tmp_path / "out" / "X.npy").exists() and not list((tmp_path / "out").glob("*.partial"))


def _cli_error(tmp_path, path: Path) -> str:
    code, err = run(["--block", "spectrogram", "--window-ms", 1000, "--out", tmp_path / "out", path])
    assert code == 1
    return _one_line(err)


@pytest.mark.parametrize("channels", [1, 2])
def test_wav_with_no_frames_says_it_holds_no_samples(tmp_path, channels):
    path = tmp_path / f"silent{channels}.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"")
    with pytest.raises(ConfigurationError, match="holds no samples"):
        readers.read_recording(path)
    line = _cli_error(tmp_path, path)
    assert path.name in line and "holds no samples" in line


def test_csv_whitespace_lines_and_trailing_separators_are_read(tmp_path):
    expected = np.array([[1.0, -2.0], [3.5, 4.0], [5.0, 6.25]])
    rows = ["0,1,-2", "10,3.5,4", "20,5,6.25"]
    files = {
        "blank_tail.csv": "timestamp,accX,accY\n" + "\n".join(rows) + "\n   \n\t\n",
        "blank_middle.csv": "timestamp,accX,accY\n" + rows[0] + "\n  \n" + "\n".join(rows[1:]) + "\n",
        "excel.csv": "timestamp,accX,accY\n" + "".join(r + ",\n" for r in rows),
        "excel_header.csv": "timestamp,accX,accY,\n" + "".join(r + ",\n" for r in rows),
        "excel_semicolon.csv": "timestamp;accX;accY;\n" + "".join(r.replace(",", ";") + ";\n" for r in rows) + " \n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        recording = readers.read_recording(tmp_path / name)
        assert recording.axes == ["accX", "accY"], name
        assert recording.sampling_freq == pytest.approx(100.0), name
        np.testing.assert_array_equal(recording.values, expected, err_msg=name)


@pytest.mark.parametrize("name, content, expected", [
    ("short.csv", "timestamp,accX,accY\n0,1,2\n10,2\n", "line 3: expected 3 columns (timestamp, accX, accY), found 2"),
    ("long.csv", "timestamp,accX\n0,1\n10,2,3\n", "line 3: expected 2 columns (timestamp, accX), found 3"),
    ("filled.csv", "timestamp,accX\n0,1,\n10,2,7\n", "line 3: expected 2 columns (timestamp, accX), found 3"),
    ("hole.csv", "timestamp,accX\n0,1\n\n20,\n", "line 4, column 'accX': expected a number, found an empty cell"),
    ("word.csv", "timestamp,accX\n0,1\n  \n20,oops\n", "line 4, column 'accX': expected a number, found 'oops'"),
])
def test_csv_parse_errors_name_the_line_and_the_columns(tmp_path, name, content, expected):
    (tmp_path / name).write_text(content)
    line = _cli_error(tmp_path, tmp_path / name)
    assert name in line and expected in line and "usecols" not in line and "float64" not in line


@pytest.mark.parametrize("values, sensors, expected", [
    ([1, [2], 3], ["a"], "payload.values[1] is [2]"),
    ([1.5, 2, [3, 4]], ["a"], "payload.values[2] is [3,4]"),
    ([[1], 2, [3]], ["a"], "payload.values[1] is 2"),
    ([[1, 2], [3, 4], 5], ["a", "b"], "payload.values[2] is 5"),
    ([[1, 2], [3], [4, 5]], ["a", "b"], "payload.values[1] is [3]"),
    ([], ["a", "b"], "holds no samples"),
    ([], ["a"], "holds no samples"),
])
def test_acquisition_values_of_mixed_kinds_or_none_are_refused(tmp_path, values, sensors, expected):
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps({"payload": {"interval_ms": 1, "sensors": [{"name": n} for n in sensors],
                                            "values": values}}))
    line = _cli_error(tmp_path, path)
    assert "mixed.json" in line and expected in line


def test_bad_block_parameters_and_options(tmp_path):
    write_acquisition(tmp_path / "a.json", tone(1.0, 1000.0, 50, seed=0), ["audio"], 1000.0)
    base = ["--window-ms", 1000, "--out", tmp_path / "out", tmp_path / "a.json"]
    cases = [
        (["--block", "wavelets"], "Unknown block 'wavelets'; blocks: spectrogram"),
        (["--block", "spectrogram", "--params", '{"fft-lenght": 128}'], "Did you mean 'fft_length'"),
        (["--block", "spectrogram", "--params", '{"fft-length": "many"}'], "must be"),
        (["--block", "spectrogram", "--params", "{fft-length: 1}"], "--params is not valid JSON"),
        (["--block", "spectrogram", "--implementation-version", "9"], "supported: 1, 2, 3, 4"),
        (["--block", "spectrogram", "--axes", '{"audio": "audio"}'], "declares no named axes"),
        (["--block", "kalman", "--axes", '{"accX": "nope"}'], "a.json"),
        (["--block", "spectrogram", "--increase-ms", "0"], "--increase-ms must be a positive"),
    ]
    for extra, expected in cases:
        code, err = run([*extra, *base])
        assert code == 1 and expected in _one_line(err), (extra, err)
    code, err = run(["--block", "spectrogram", "--window-ms", 1000, "--out", tmp_path / "o", tmp_path / "missing"])
    assert code == 1 and "missing: no such file or directory" in _one_line(err)


# --- progress ---------------------------------------------------------------------------------


def test_progress_bar_only_on_a_terminal_and_not_with_quiet(tmp_path):
    write_acquisition(tmp_path / "data" / "a.json", tone(2.0, 1000.0, 50, seed=0), ["audio"], 1000.0)
    args = ["--block", "spectrogram", "--window-ms", 1000, "--increase-ms", 500, "--out", tmp_path / "out",
            tmp_path / "data"]
    code, err = run(args, tty=True)
    assert code == 0 and "\r[" + "#" * extract.Progress.WIDTH + "] 1/1 files  3 windows" in err
    code, err = run(args)
    assert code == 0 and "\r" not in err and "3 windows x" in err
    code, err = run([*args, "--quiet"], tty=True)
    assert code == 0 and err == ""


# --- the real command -------------------------------------------------------------------------


def test_command_line_module_end_to_end(tmp_path):
    write_acquisition(tmp_path / "data" / "idle.1.json", tone(1.0, 16000.0, 440, seed=0), ["audio"], 16000.0)
    (tmp_path / "data" / "bad.2.json").write_text("{")
    command = [sys.executable, "-m", "dsp.datasets.extract", "--block", "spectrogram", "--window-ms", "1000",
               "--out", str(tmp_path / "out")]
    done = subprocess.run([*command, str(tmp_path / "data" / "idle.1.json")], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert np.load(tmp_path / "out" / "X.npy").shape[0] == 1
    failed = subprocess.run([*command, str(tmp_path / "data")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1].startswith("error: ") and "bad.2.json" in failed.stderr
