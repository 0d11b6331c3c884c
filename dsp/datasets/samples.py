"""Edge Impulse multi-sensor samples from separately recorded streams: a WAV and sensor files.

    python -m dsp.datasets.samples --audio rec/audio.wav --sensors rec/imu.csv rec/light.json \\
        --out samples/ [--out-rate 16000] [--labels rec/labels.txt] [--audio-start T] [--offset-ms 0]

The sensor-fusion tutorial starts from samples that hold every sensor ("parse your dataset to
create multi-sensor data samples"), but a microphone and an IMU are usually recorded apart, each
on its own clock and at its own rate. This puts the streams on one clock and one rate, crops
them to the time all of them cover, and writes Edge Impulse acquisition JSON files that the
uploader and Studio's data acquisition take. The files are read by `dsp.datasets.readers`
(WAV, CSV, acquisition JSON; its errors).

Clocks
------
* A sensor CSV carries its clock in its time column (`timestamp`, `time`, `t`, optionally with a
  unit suffix: `t_ns`, `time_ms`, ...). The unit is `--time-unit` when given, else the one the
  name states, else (a bare `timestamp`, `time` or `t`, whose unit varies between devices) the
  one of s, ms, us, ns in which the median interval is a plausible sampling rate
  (`PLAUSIBLE_HZ`) and which makes the file's length closest to the audio's; the units are 1000
  apart, so the two criteria together rarely hesitate. A stated unit that gives an implausible
  rate is an error. The unit chosen, and why, is reported.
* A file without timestamps (acquisition JSON; a CSV without a time column, given `--rate`) is
  taken at its nominal rate, starting with the audio's first sample in the sensors' clock.
* A WAV has no clock: its sample k is at k / its nominal rate. Sensor timestamps are taken as
  relative to the audio's first sample, unless `--audio-start` gives that sample's time in the
  sensors' clock (for absolute timestamps such as Unix nanoseconds): a bare number is in the
  sensors' timestamp unit, or it carries its own (`1717000000.25s`, `1717000000250000000ns`).
  `--offset-ms` moves the audio later by that much (earlier when negative), on top of that.
* Each sensor is interpolated at the output instants from its own timestamps, so a sensor
  whose oscillator runs a few hundred ppm off its nominal rate still lands where its timestamps
  put it. Linear interpolation: it never leaves the range of the two readings around an instant
  (a cubic overshoots at a click or a step, inventing values), and for what a slow sensor
  resolves (well below its Nyquist frequency) it adds less error than the sensor's noise. A
  zero-order hold, as `models/coffee_dataset.py` uses on its own common clock, would shift each
  reading by up to one sensor interval. Timestamps are float64: at Unix-nanosecond magnitudes
  that is 0.25 us, far below one output sample.
* The audio is resampled to the output rate (`--out-rate`, default the audio's) with
  scipy.signal.resample_poly (polyphase, anti-aliasing low-pass) at up/down = output rate /
  audio rate: exact for integer rates; otherwise the nearest fraction with a denominator up to
  `MAX_DENOMINATOR`, and the output rate is then the one that fraction gives. Output sample m is
  at m / output rate seconds of the audio.

For each stream the report (stderr) gives its rate as measured: for a timestamped file the rate
of the median interval and of a straight-line fit of time against sample number over the whole
file, and its gaps (intervals over `GAP_FACTOR` times the median: count and longest); then what
the crop dropped from each end of each stream.

Output
------
One acquisition JSON file per labelled segment with `--labels` (Audacity's label track export:
`start<TAB>end<TAB>label` per line, seconds from the audio's first sample; its spectral lines,
starting with a backslash, are skipped), else one for the whole common span, labelled `--label`
(default: the WAV's name before its first dot). Names are `<label>.<wav stem>.<n>.json` (the
whole span: `<label>.<wav stem>.json`), so the uploader and `dsp.datasets.extract` take the label
from the part before the first dot; a label with a dot or a slash is refused for that reason.

The document: `protected` {ver "v1", alg "none", iat: seconds since 1970 when written},
`signature` 64 zeros (unsigned), `payload` {device_type, interval_ms, sensors [{name, units}],
values [[audio..., sensor axes...], ...]}. Axes: `audio` (mono) or `audio0`, `audio1`, ... in
units `wav`, as integers on the int16 scale (rounded and clipped, as Studio stores audio); then
each sensor file's axes in order, with their names (CSV columns; acquisition sensors) and units
(the acquisition file's; `N/A` for CSV). A sensor axis whose name another file (or the audio)
also uses is renamed `<file stem>_<name>`. Sensor values are rounded to `SIGNIFICANT_DIGITS`
significant digits of the axis' largest magnitude: interpolated values carry no more, and the
files stay about half as large.

Nothing is written until every input has been read and checked; the files are written into a
temporary directory beside `--out` and moved into it (replacing files of the same name) only
when all are written. Every problem stops the run with one line naming the file, exit status 1.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Optional, TextIO

import numpy as np

from dsp.core.errors import ConfigurationError
from dsp.datasets.readers import TIME_UNITS_S, Stream, label_from_name, read_stream, time_column_unit

# A sampling rate outside this range (Hz) is taken as a sign of the wrong time unit.
PLAUSIBLE_HZ = (0.01, 100_000.0)
# An interval longer than this many times the median is a gap.
GAP_FACTOR = 1.5
# Largest denominator of the resampling ratio up/down when the rates are not integers.
MAX_DENOMINATOR = 1000
SIGNIFICANT_DIGITS = 7
DEVICE_TYPE = "MULTI_SENSOR_RECORDING"
# Decimal factors to seconds, so --audio-start keeps every digit until it meets the timestamps.
_UNIT_DECIMAL = {"s": Decimal(1), "ms": Decimal("1e-3"), "us": Decimal("1e-6"), "ns": Decimal("1e-9")}
# 2001-01-01 to 2100-01-01 in s: timestamps in this range (in some unit) look like Unix time.
_UNIX_S = (978_307_200.0, 4_102_444_800.0)


# --- sensor clocks --------------------------------------------------------------------------


@dataclass
class SensorTrack:
    """One sensor file on the audio's time axis: `times` in seconds from the audio's first sample."""

    name: str
    stream: Stream
    times: np.ndarray
    axes: list[str]
    unit: Optional[str] = None  # of the time column; None without timestamps
    unit_reason: str = ""


def parse_time_unit(text: Optional[str], option: str = "--time-unit") -> Optional[str]:
    if text is None:
        return None
    unit = text.strip().lower()
    if unit not in TIME_UNITS_S:
        raise ConfigurationError(f"{option} must be one of {', '.join(TIME_UNITS_S)}; got {text!r}.")
    return unit


def parse_audio_start(text: Optional[str]) -> Optional[tuple[Decimal, Optional[str]]]:
    """--audio-start: (value, unit or None for the sensors' unit); Decimal keeps all 19 digits
    of a Unix time in ns."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or (unit and unit not in TIME_UNITS_S):
        raise ConfigurationError(
            f"--audio-start must be a time in the sensors' clock: a number in their timestamps' unit, "
            f"or with a unit ({', '.join(TIME_UNITS_S)}), e.g. 1717000000250000000ns; got {text!r}.")
    try:
        value = Decimal(match.group(1))
    except InvalidOperation:
        raise ConfigurationError(f"--audio-start: {match.group(1)!r} is not a number.") from None
    return value, unit or None


def detect_time_unit(stream: Stream, audio_seconds: float, override: Optional[str] = None) -> tuple[str, str]:
    """(unit, why) of a CSV's time column; see the module docstring for the rules."""
    if override is not None:
        return override, "given by --time-unit"
    column = stream.time_column
    median = float(np.median(np.diff(stream.times)))
    span = float(stream.times[-1] - stream.times[0])
    unit, stated = time_column_unit(column)
    low, high = PLAUSIBLE_HZ
    if stated:
        rate = 1.0 / (median * TIME_UNITS_S[unit])
        if not low <= rate <= high:
            raise ConfigurationError(
                f"the time column '{column}' is in {unit} by its name, so its median interval "
                f"({median:g} {unit}) means {rate:.3g} Hz, outside {low:g} Hz to {high:g} Hz; "
                "if the column is in another unit, pass --time-unit.")
        return unit, "as its name says"
    plausible = [u for u in TIME_UNITS_S if low <= 1.0 / (median * TIME_UNITS_S[u]) <= high]
    if not plausible:
        raise ConfigurationError(
            f"cannot tell the unit of the time column '{column}': its median interval, {median:g}, is "
            f"no sampling rate between {low:g} Hz and {high:g} Hz in s, ms, us or ns; pass --time-unit.")
    # The file was recorded alongside the audio: its length in the right unit is near the audio's.
    best = min(plausible, key=lambda u: abs(math.log(max(span * TIME_UNITS_S[u], 1e-12) / audio_seconds)))
    if len(plausible) == 1:
        return best, "the only unit of s, ms, us, ns giving a plausible rate"
    return best, (f"{', '.join(u for u in plausible if u != best)} would also give a plausible rate, "
                  f"but {best} makes the file's length nearest the audio's")


def sensor_track(name: str, stream: Stream, unit: Optional[tuple[str, str]],
                 start: Optional[tuple[Decimal, Optional[str]]], start_unit: Optional[str],
                 offset_s: float) -> SensorTrack:
    """The sensor file on the audio's time axis (seconds from the audio's first sample).

    unit: (unit, why) of its time column, None without one; start: --audio-start (value, its
    unit or None); start_unit: the unit a bare start is in.
    """
    if stream.times is None:
        # No clock of its own: it starts with the audio's first sample in the sensors' clock.
        times = np.arange(stream.values.shape[0]) / stream.sampling_freq - offset_s
        return SensorTrack(name, stream, times, list(stream.axes))
    unit, reason = unit
    origin = 0.0
    if start is not None:
        value, given_unit = start
        origin = float(value * _UNIT_DECIMAL[given_unit or start_unit] / _UNIT_DECIMAL[unit])
    # Subtracting in the file's own unit first keeps the float64 timestamps' precision.
    times = (stream.times - origin) * TIME_UNITS_S[unit] - offset_s
    return SensorTrack(name, stream, times, list(stream.axes), unit, reason)


def clock_report(track: SensorTrack) -> str:
    """How the file's clock really ran: rate by the median interval and by a fit, and gaps."""
    stream = track.stream
    axes = f"{len(track.axes)} {'axis' if len(track.axes) == 1 else 'axes'} ({', '.join(track.axes)})"
    if track.unit is None:
        source = "interval_ms" if stream.path.suffix.lower() == ".json" else "--rate"
        return (f"{track.name}: {stream.values.shape[0]} samples, {axes}; no timestamps: "
                f"{stream.sampling_freq:g} Hz from {source}, starting with the audio")
    steps = np.diff(track.times)
    median = float(np.median(steps))
    slope = np.polyfit(np.arange(track.times.size, dtype=np.float64), track.times - track.times[0], 1)[0]
    gaps = steps > GAP_FACTOR * median
    if gaps.any():
        longest = int(np.argmax(np.where(gaps, steps, 0.0)))
        gap_text = (f"{int(gaps.sum())} {'gap' if gaps.sum() == 1 else 'gaps'} (intervals over "
                    f"{GAP_FACTOR:g}x the median), the longest {steps[longest] * 1000:.3f} ms "
                    f"at {track.times[longest]:.3f} s")
    else:
        gap_text = f"no gaps (no interval over {GAP_FACTOR:g}x the median)"
    return (f"{track.name}: {track.times.size} samples, {axes}; time column '{stream.time_column}' in "
            f"{track.unit} ({track.unit_reason}); {1.0 / median:.6g} Hz by the median interval "
            f"({median * 1000:.4g} ms), {1.0 / slope:.6g} Hz fitted over the file; {gap_text}")


def _disambiguate(tracks: list[SensorTrack], audio_axes: list[str]) -> None:
    """Prefix a sensor axis with its file's stem when another file (or the audio) uses its name."""
    owners: dict[str, set[int]] = {}
    for index, track in enumerate(tracks):
        for axis in track.axes:
            owners.setdefault(axis, set()).add(index)
    for index, track in enumerate(tracks):
        track.axes = [f"{track.stream.path.stem}_{axis}" if len(owners[axis]) > 1 or axis in audio_axes
                      else axis for axis in track.axes]
    names = audio_axes + [axis for track in tracks for axis in track.axes]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigurationError(
            f"axis names {', '.join(repeated)} still clash after prefixing them with their files' names; "
            "rename the files or the columns.")


# --- labels ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A labelled stretch of the recording, in seconds from the audio's first sample."""

    start: float
    end: float
    label: str
    line: int


def check_label(label: str, where: str) -> str:
    if not label or label != label.strip() or any(c in label for c in "./\\"):
        raise ConfigurationError(
            f"{where}: the label {label!r} cannot name a file that keeps it (the uploader takes the "
            "label from the file name up to its first dot): use one without '.', '/', '\\\\' or "
            "surrounding spaces.")
    return label


def read_labels(path: Path) -> list[Segment]:
    """Segments of an Audacity label track export: `start<TAB>end<TAB>label`, seconds."""
    try:
        if path.stat().st_size == 0:
            raise ConfigurationError(f"{path}: the label file is empty.")
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{path}: not a text label file (not UTF-8).") from None
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the label file ({exc.strerror or exc}).") from None
    segments = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("\\"):  # Audacity's spectral selection lines
            continue
        cells = line.split("\t") if "\t" in line else line.split(None, 2)
        try:
            start, end = float(cells[0]), float(cells[1])
        except (ValueError, IndexError):
            raise ConfigurationError(
                f"{path}: line {number}: expected 'start<TAB>end<TAB>label' in seconds (Audacity's "
                f"label export), found {line.strip()[:60]!r}.") from None
        label = cells[2].strip() if len(cells) > 2 else ""
        if not label:
            raise ConfigurationError(f"{path}: line {number}: the label is empty.")
        check_label(label, f"{path}: line {number}")
        if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
            raise ConfigurationError(
                f"{path}: line {number}: '{label}' ends ({end:g} s) before it starts ({start:g} s); "
                "a label must end after it starts.")
        segments.append(Segment(start, end, label, number))
    if not segments:
        raise ConfigurationError(f"{path}: no labels in the file; expected 'start<TAB>end<TAB>label' lines.")
    return segments


# --- alignment ------------------------------------------------------------------------------


def resample_ratio(out_rate: float, audio_rate: float) -> Fraction:
    """up/down for resample_poly: exact for integer rates, else the nearest small fraction."""
    if float(out_rate).is_integer() and float(audio_rate).is_integer():
        return Fraction(int(out_rate), int(audio_rate))
    return Fraction(out_rate / audio_rate).limit_denominator(MAX_DENOMINATOR)


@dataclass
class SampleFile:
    """One output file: its name, label and rows [start, stop) of the aligned values."""

    name: str
    label: str
    start: int
    stop: int


@dataclass
class Plan:
    """Everything to write, computed and checked; nothing written yet."""

    values: np.ndarray  # (rows, axes) float64: audio (integers), then the sensors
    audio_columns: int
    axes: list[str]
    units: list[str]
    rate: float
    first_time: float  # seconds of the audio at row 0
    files: list[SampleFile]
    report: list[str] = field(default_factory=list)


def plan_samples(audio_path: "str | Path", sensor_paths: list["str | Path"], out_rate: Optional[float] = None,
                 labels_path: "str | Path | None" = None, audio_start: Optional[str] = None,
                 offset_ms: float = 0.0, time_unit: Optional[str] = None, sensor_rate: Optional[float] = None,
                 label: Optional[str] = None) -> Plan:
    """Read, align, crop and resample the streams; the files to write (see the module docstring).

    Parameters
    ----------
    audio_path : path of the WAV file.
    sensor_paths : CSV or acquisition JSON files of the other sensors.
    out_rate : output rate in Hz; default the audio's.
    labels_path : Audacity label track export; without it one file for the whole common span.
    audio_start : the audio's first sample in the sensors' clock (text, as --audio-start).
    offset_ms : moves the audio later by this many ms.
    time_unit : s, ms, us or ns for every CSV time column, instead of detecting it.
    sensor_rate : Hz of CSV files without a time column.
    label : of the whole-span file (default: the WAV's name up to its first dot).
    """
    audio_path = Path(audio_path)
    time_unit = parse_time_unit(time_unit)
    start = parse_audio_start(audio_start)
    for value, option in ((offset_ms, "--offset-ms"), (out_rate, "--out-rate"), (sensor_rate, "--rate")):
        if value is not None and not math.isfinite(value):
            raise ConfigurationError(f"{option} must be a finite number; got {value!r}.")
    for value, option in ((out_rate, "--out-rate"), (sensor_rate, "--rate")):
        if value is not None and not value > 0:
            raise ConfigurationError(f"{option} must be a positive number of Hz; got {value!r}.")
    if not sensor_paths:
        raise ConfigurationError("no sensor files (--sensors): give at least one CSV or acquisition JSON file.")
    if audio_path.suffix.lower() != ".wav":
        raise ConfigurationError(f"{audio_path}: the audio must be a WAV file (.wav).")
    audio = read_stream(audio_path)
    audio_rate = audio.sampling_freq
    audio_samples = audio.values.shape[0]
    audio_seconds = audio_samples / audio_rate
    sensors = []
    for given in sensor_paths:
        path = Path(given)
        if path.suffix.lower() not in (".csv", ".json"):
            raise ConfigurationError(f"{given}: a sensor file must be CSV (.csv) or acquisition JSON (.json).")
        sensors.append((str(given), read_stream(path, sensor_rate)))
    segments = read_labels(Path(labels_path)) if labels_path is not None else None
    whole_label = check_label(label if label is not None else label_from_name(audio_path),
                              "--label" if label is not None else f"{audio_path} (its label)")

    units = {}
    for name, stream in sensors:
        if stream.times is not None:
            try:
                units[name] = detect_time_unit(stream, audio_seconds, time_unit)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{name}: {exc}") from None
    start_unit = _bare_start_unit(audio_start, start, units)
    offset_s = offset_ms / 1000.0
    tracks = [sensor_track(name, stream, units.get(name), start, start_unit, offset_s)
              for name, stream in sensors]
    _disambiguate(tracks, list(audio.axes))

    ratio = resample_ratio(out_rate if out_rate is not None else audio_rate, audio_rate)
    rate = audio_rate * ratio.numerator / ratio.denominator
    report = [f"{audio_path}: {audio_samples} samples, {_axes_text(audio.axes)} at {audio_rate:g} Hz, "
              f"{audio_seconds:.3f} s (a WAV has no clock: sample k is at k / {audio_rate:g} Hz)"]
    report += [clock_report(track) for track in tracks]

    # The time every stream covers, on the audio's axis; output sample m is at m / rate.
    first, last = 0.0, (audio_samples - 1) / audio_rate
    covered = [(str(audio_path), first, last)]
    for track in tracks:
        begin, end = float(track.times[0]), float(track.times[-1])
        if begin > last or end < first:
            raise ConfigurationError(_no_overlap(track, begin, end, covered, start is None))
        first, last = max(first, begin), min(last, end)
        covered.append((track.name, begin, end))
    # A hair of tolerance: a sensor sampled exactly on the grid keeps its end points.
    m0 = math.ceil(first * rate - 1e-9)
    m1 = math.floor(last * rate + 1e-9)
    if m1 < m0:
        raise ConfigurationError(f"{tracks[-1].name}: the streams overlap for less than one output "
                                 f"sample ({(last - first) * 1000:.3f} ms).")
    instants = np.arange(m0, m1 + 1) / rate
    report.append(f"common span: {m0 / rate:.3f} s to {m1 / rate:.3f} s of the audio "
                  f"({(m1 - m0 + 1) / rate:.3f} s, {m1 - m0 + 1} samples at {rate:g} Hz)")
    for name, begin, end in covered:
        report.append(f"{name}: dropped {max(m0 / rate - begin, 0.0):.3f} s at the start and "
                      f"{max(end - m1 / rate, 0.0):.3f} s at the end")

    values = np.empty((instants.size, len(audio.axes) + sum(len(t.axes) for t in tracks)))
    values[:, :len(audio.axes)] = _resampled_audio(audio.values, ratio)[m0:m1 + 1]
    column = len(audio.axes)
    for track in tracks:
        for axis in range(track.stream.values.shape[1]):
            values[:, column] = np.interp(instants, track.times, track.stream.values[:, axis])
            column += 1
    if ratio != 1:
        report.append(f"audio resampled from {audio_rate:g} Hz to {rate:g} Hz (resample_poly, up/down "
                      f"{ratio.numerator}/{ratio.denominator}); sensors interpolated linearly at the "
                      "output instants")
    axes = list(audio.axes) + [axis for track in tracks for axis in track.axes]
    units = list(audio.units) + [unit for track in tracks for unit in track.stream.units]
    files = _files(segments, labels_path, whole_label, audio_path.stem, audio_seconds, audio_rate, rate, m0, m1)
    return Plan(values=values, audio_columns=len(audio.axes), axes=axes, units=units, rate=rate,
                first_time=m0 / rate, files=files, report=report)


def _bare_start_unit(text: Optional[str], start, units: dict[str, tuple[str, str]]) -> Optional[str]:
    """The unit of an --audio-start given without one: the sensors' timestamps', which must agree."""
    if start is None:
        return None
    if not units:
        raise ConfigurationError(
            f"--audio-start {text}: no sensor file has timestamps, so there is no sensors' clock to place "
            "the audio in (files without timestamps start with the audio).")
    if start[1] is not None:
        return None
    found = sorted({unit for unit, _ in units.values()})
    if len(found) > 1:
        listed = ", ".join(f"{name} in {unit}" for name, (unit, _) in units.items())
        raise ConfigurationError(
            f"--audio-start {text}: the sensor files' timestamps are in different units ({listed}); "
            f"give its unit, e.g. {text.strip()}{found[0]}.")
    return found[0]


def _axes_text(axes: list[str]) -> str:
    return f"{len(axes)} {'channel' if len(axes) == 1 else 'channels'} ({', '.join(axes)})"


def _no_overlap(track: SensorTrack, begin: float, end: float, covered: list, relative: bool) -> str:
    spans = ", ".join(f"{name} {b:.3f} to {e:.3f} s" for name, b, e in covered)
    text = (f"{track.name}: no overlap with the other streams: it covers {begin:.3f} to {end:.3f} s "
            f"of the audio's time axis, {spans}.")
    if relative and track.unit is not None:
        first = float(track.stream.times[0]) * TIME_UNITS_S[track.unit]
        if _UNIX_S[0] <= first <= _UNIX_S[1]:
            text += (" Its timestamps look like Unix time: give the audio's first sample's time in the "
                     "same clock with --audio-start.")
    return text


def _resampled_audio(values: np.ndarray, ratio: Fraction) -> np.ndarray:
    if ratio == 1:
        return values
    from scipy.signal import resample_poly

    return resample_poly(values, ratio.numerator, ratio.denominator, axis=0)


def _files(segments: Optional[list[Segment]], labels_path, whole_label: str, stem: str, audio_seconds: float,
           audio_rate: float, rate: float, m0: int, m1: int) -> list[SampleFile]:
    """The output files as row ranges of the aligned values (row 0 is output sample m0)."""
    if segments is None:
        return [SampleFile(f"{whole_label}.{stem}.json", whole_label, 0, m1 - m0 + 1)]
    width = len(str(len(segments)))
    # A label ending at the audio's end reaches past the last output instant by up to one audio
    # sample: that much overhang is the recording's own end, not a label outside it.
    slack = max(1, math.ceil(rate / audio_rate))
    files = []
    for number, segment in enumerate(segments, start=1):
        where = f"{labels_path}: line {segment.line}: '{segment.label}' ({segment.start:g} to {segment.end:g} s)"
        if segment.start < 0 or segment.end > audio_seconds + 1e-9:
            raise ConfigurationError(f"{where} is outside the recording (0 to {audio_seconds:.3f} s of the audio).")
        begin, end = round(segment.start * rate), round(segment.end * rate)
        if begin < m0 - slack or end > m1 + 1 + slack:
            raise ConfigurationError(
                f"{where} reaches outside the {m0 / rate:.3f} s to {(m1 + 1) / rate:.3f} s of the audio "
                "that every stream covers.")
        begin, end = max(begin, m0), min(end, m1 + 1)
        if end <= begin:
            raise ConfigurationError(f"{where} is shorter than one output sample.")
        files.append(SampleFile(f"{segment.label}.{stem}.{number:0{width}d}.json", segment.label,
                                begin - m0, end - m0))
    return files


# --- writing --------------------------------------------------------------------------------


def document(plan: Plan, sample: SampleFile, device_type: str = DEVICE_TYPE, iat: Optional[int] = None) -> str:
    """The acquisition JSON text of one file."""
    rows = plan.values[sample.start:sample.stop]
    audio = np.clip(np.rint(rows[:, :plan.audio_columns]), -32768, 32767).astype(np.int64)
    sensors = rows[:, plan.audio_columns:].copy()
    for column in range(sensors.shape[1]):
        largest = float(np.abs(sensors[:, column]).max())
        if largest > 0:
            sensors[:, column] = np.round(sensors[:, column],
                                          SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(largest)))
    values = [a + s for a, s in zip(audio.tolist(), sensors.tolist())]
    return json.dumps({
        "protected": {"ver": "v1", "alg": "none", "iat": int(time.time()) if iat is None else iat},
        "signature": "0" * 64,
        "payload": {
            "device_type": device_type,
            "interval_ms": 1000.0 / plan.rate,
            "sensors": [{"name": name, "units": unit} for name, unit in zip(plan.axes, plan.units)],
            "values": values,
        },
    }, separators=(",", ":"))


def write_samples(plan: Plan, out: "str | Path", device_type: str = DEVICE_TYPE) -> list[Path]:
    """Write every file into a temporary directory beside `out`, then move them into `out`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"{out}: exists and is not a directory.")
    parent = out.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))
    try:
        for sample in plan.files:
            (staging / sample.name).write_text(document(plan, sample, device_type), encoding="utf-8")
        if not out.exists():
            staging.rename(out)
        else:
            for sample in plan.files:
                os.replace(staging / sample.name, out / sample.name)
            staging.rmdir()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out / sample.name for sample in plan.files]


# --- command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dsp.datasets.samples",
        description="Align a WAV and other sensors' recordings (CSV, acquisition JSON) on their timestamps, "
                    "crop them to the time all cover, resample them to one rate and write Edge Impulse "
                    "acquisition JSON samples (one per labelled segment).")
    parser.add_argument("--audio", required=True, type=Path, help="the WAV file")
    parser.add_argument("--sensors", required=True, nargs="+", metavar="FILE",
                        help="the other sensors: CSV files with a time column, or acquisition JSON files")
    parser.add_argument("--out", required=True, type=Path, help="output directory (created)")
    parser.add_argument("--out-rate", type=float, help="output rate in Hz (default: the audio's)")
    parser.add_argument("--labels", type=Path, help="Audacity label track export: start<TAB>end<TAB>label, "
                                                    "seconds from the audio's start; one file per label")
    parser.add_argument("--label", help="label of the single file written without --labels "
                                        "(default: the WAV's name before its first dot)")
    parser.add_argument("--audio-start", help="the audio's first sample in the sensors' clock: a number in "
                                              "their timestamps' unit, or with one (1717000000.25s); "
                                              "default: timestamps are relative to the audio's start")
    parser.add_argument("--offset-ms", type=float, default=0.0, help="move the audio later by this many ms")
    parser.add_argument("--time-unit", help="unit of the CSV time columns: s, ms, us or ns (default: detected)")
    parser.add_argument("--rate", type=float, help="sampling rate in Hz of CSV files without a time column")
    parser.add_argument("--device-type", default=DEVICE_TYPE, help=f"payload.device_type (default {DEVICE_TYPE})")
    parser.add_argument("--quiet", action="store_true", help="no report, only errors")
    return parser


def main(argv: Optional[list[str]] = None, stderr: Optional[TextIO] = None) -> int:
    """The command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    stderr = stderr or sys.stderr
    try:
        plan = plan_samples(args.audio, args.sensors, args.out_rate, args.labels, args.audio_start,
                            args.offset_ms, args.time_unit, args.rate, args.label)
        paths = write_samples(plan, args.out, args.device_type)
    except ConfigurationError as exc:
        stderr.write(f"error: {exc}\n")
        return 1
    except OSError as exc:
        stderr.write(f"error: {exc.filename or args.out}: {exc.strerror or exc}\n")
        return 1
    if not args.quiet:
        for line in plan.report:
            stderr.write(line + "\n")
        stderr.write(f"wrote {len(paths)} {'file' if len(paths) == 1 else 'files'} to {args.out} "
                     f"({len(plan.axes)} axes at {plan.rate:g} Hz):\n")
        for sample in plan.files:
            stderr.write(f"  {sample.name}: {sample.stop - sample.start} samples "
                         f"({(sample.stop - sample.start) / plan.rate:.3f} s) from "
                         f"{plan.first_time + sample.start / plan.rate:.3f} s of the audio\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
