"""A seeded, simulated version of the seed tutorial's coffee-machine dataset.

Stages ``grind``, ``idle``, ``pump`` and ``extract``; every sample is a time-aligned pair of
one second of mono audio at 16 kHz (int16-valued) and one second of a 3-axis accelerometer
at 100 Hz (m/s^2, gravity included), so the project can build, test and demonstrate its
sensor-fusion models anywhere, without downloading the tutorial's data.

What each stage sounds and feels like
-------------------------------------
Every stage sits on top of the room and the machine at rest: room tone (coloured noise),
the machine's power-supply hum at twice the mains frequency, the microphone's self-noise,
occasional kitchen clinks, floor vibration, the odd bump against the counter and, in some
kitchens, a nearby appliance humming at the mains frequency through the counter top.

* ``grind``: the grinder motor (harmonics of its rotation frequency, 140-300 Hz) and
  broadband burr noise (friction hiss and the clicks of beans fracturing, swelling with the
  burrs' rotation), the loudest thing in the kitchen; strong vibration from the motor's
  imbalance, the burrs' rotation (4-12 Hz) and the crunch of beans.
* ``idle``: only the above: near silence with mains hum.
* ``pump``: the vibratory pump (a solenoid piston driven at the mains frequency: a buzz rich in
  mains harmonics) and water moving in the circuit. Working against the closed circuit, the
  piston strokes hard and the solenoid valve pulses (1.5-4 Hz), so the machine shakes: strong
  vibration at the mains frequency plus knocks that ring the mount's resonance (15-35 Hz).
* ``extract``: the same pump, now pushing water through the coffee puck, and the flow into the
  cup: to the microphone much like ``pump`` (a little more hiss, a little less buzz, with
  machine-to-machine spreads several times larger than that difference). Loaded by the puck,
  the pump barely strokes: weak vibration (flow rumble below 15 Hz), about the level of the
  floor's own.

So by design ``pump`` and ``extract`` are hard to tell apart by ear but easy by vibration, and
``idle`` and ``extract`` are hard to tell apart by vibration but easy by ear: fusion matters.
`measure` checks it (``python -m models.coffee_dataset --measure``; figures in
``models/coffee_dataset_report.md``).

What varies from machine to machine
-----------------------------------
Mains frequency (50 or 60 Hz), grinder motor and burr speeds, loudness of each source,
room noise level and colour, microphone gain and low-frequency roll-off, how strongly the
accelerometer is coupled to the chassis, the mount's resonance, the sensor's orientation
(mounted flat, upside down or on a side panel, tilted), its noise and calibration errors.
Within a machine, each stage is one continuous run (``windows_per_stage`` seconds) whose
speeds and levels drift slowly; the windows are consecutive 1 s cuts of that run. Evaluate
on held-out machines (`split_by_machine`): windows of one run are correlated.

Sensors
-------
The machine's motion is simulated at 1 kHz and the accelerometer averages it over each 10 ms
output period (an integrating MEMS decimator), so the 50 Hz pump stroke appears at the
Nyquist frequency and a 60 Hz one aliases to 40 Hz, as on real 100 Hz sensors. Readings are
rounded to 0.1 mm/s^2 (finer than a MEMS sensor's LSB of about 1 mm/s^2), which keeps them
short and exact in JSON.

Edge Impulse acquisition JSON
-----------------------------
`write_acquisition_json` writes one file per sample (the data acquisition format's JSON
encoding) with sensors ``audio`` (units ``wav``) and ``accX``, ``accY``, ``accZ`` (``m/s2``) at
one common rate, by default 16 kHz:

* the audio is left untouched: the tutorial's spectrogram front-end and this project's
  embedding models expect 16 kHz;
* each accelerometer reading is held for 160 audio samples (zero-order hold). That is what a
  device reading a 100 Hz sensor's output register at the audio rate records; it invents no
  values and the 100 Hz readings come back exactly by taking every 160th row. Interpolating
  instead would smooth the held steps but make up samples the sensor never produced. To
  analyse the accelerometer in Studio, give the spectral-analysis block an
  ``input-decimation-ratio`` of 100 (16 kHz to 160 Hz).

Lower common rates (divisors of 16 kHz that are multiples of 100 Hz) are allowed; the audio is
then decimated with an anti-aliasing polyphase filter. The files are unsigned:
``protected.alg`` is ``"none"`` and ``signature`` a placeholder of 64 zeros (the format
requires the field). Names are ``<label>.m<machine>-w<index>.json``, e.g.
``grind.m003-w00012.json``: Studio and the uploader take the label from the part before the
first dot.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from scipy import signal as sps

__all__ = [
    "STAGES",
    "AUDIO_RATE",
    "ACCEL_RATE",
    "WINDOW_SECONDS",
    "GRAVITY",
    "CoffeeDataset",
    "generate",
    "split_by_machine",
    "machine_folds",
    "to_common_rate",
    "write_acquisition_json",
    "read_acquisition_json",
    "save_npz",
    "load_npz",
    "audio_features",
    "vibration_features",
    "feature_names",
    "measure",
    "format_measurement",
]

STAGES = ("grind", "idle", "pump", "extract")
AUDIO_RATE = 16000
ACCEL_RATE = 100
WINDOW_SECONDS = 1.0
GRAVITY = 9.80665  # m/s^2, standard gravity

AUDIO_WINDOW = int(AUDIO_RATE * WINDOW_SECONDS)
ACCEL_WINDOW = int(ACCEL_RATE * WINDOW_SECONDS)
# The machine's motion is simulated faster than the sensor samples it, so that the sensor's
# averaging and aliasing of the 50/60 Hz pump stroke and the grinder motor are modelled.
MOTION_RATE = 1000
ACCEL_DECIMALS = 4  # readings in m/s^2 to 0.1 mm/s^2
# By ear, extraction is this much hissier and less buzzy than pumping (and pumping the
# reverse); machine-to-machine spreads are several times larger.
PUMP_EXTRACT_OFFSET_DB = 1.5
INT16_FULL_SCALE = 32768.0

EI_SENSORS = (("audio", "wav"), ("accX", "m/s2"), ("accY", "m/s2"), ("accZ", "m/s2"))
EI_DEVICE_TYPE = "SIMULATED_COFFEE_MACHINE"
EI_EMPTY_SIGNATURE = "0" * 64


@dataclass
class CoffeeDataset:
    """Time-aligned audio and accelerometer windows with their stage and machine.

    Attributes
    ----------
    audio : numpy.ndarray
        (n, 16000) float64, int16-valued (rounded, clipped to [-32768, 32767]), 16 kHz.
    accel : numpy.ndarray
        (n, 100, 3) float64, m/s^2, gravity included, axes x, y, z, 100 Hz.
    labels : numpy.ndarray
        (n,) int, index into `STAGES`.
    machines : numpy.ndarray
        (n,) int, simulated machine id.
    """

    audio: np.ndarray
    accel: np.ndarray
    labels: np.ndarray
    machines: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, selection: np.ndarray) -> "CoffeeDataset":
        """The windows picked by a boolean mask or an index array, in that order."""
        return CoffeeDataset(self.audio[selection], self.accel[selection],
                             self.labels[selection], self.machines[selection])


# --------------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Machine:
    """One simulated machine in its kitchen: everything that stays fixed across its stages."""

    mains_hz: float
    motor_hz: float               # grinder motor rotation
    burr_hz: float                # burr rotation, after the gearbox
    grinder_db: float             # dBFS at unit microphone gain
    burr_to_motor_db: float       # burr noise relative to the motor's harmonics
    motor_harmonics: np.ndarray   # relative amplitudes
    burr_band: tuple[float, float]
    pump_db: float
    flow_to_buzz_db: float        # water noise relative to the pump buzz
    pump_harmonics: np.ndarray
    flow_band: tuple[float, float]
    psu_hum_db: float
    room_db: float
    room_tilt: float              # room tone power ~ f^-tilt
    mic_gain_db: float
    mic_highpass_hz: float
    mic_noise_db: float
    coupling: float               # chassis-to-sensor gain
    mount_hz: float               # the mount's resonance, rung by knocks
    rotation: np.ndarray          # machine frame -> sensor frame
    grind_vib: float              # m/s^2
    pump_vib: float
    knock_vib: float
    knock_hz: float
    extract_vib: float
    floor_vib: float
    appliance_vib: float          # 0 when no appliance hums through the counter
    sensor_noise: float
    accel_scale: np.ndarray       # per-axis calibration gain
    accel_offset: np.ndarray      # per-axis calibration offset, m/s^2
    pump_axis: np.ndarray
    knock_axis: np.ndarray
    burr_axis: np.ndarray


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation matrix about `axis` by `angle` radians."""
    x, y, z = _unit(np.asarray(axis, dtype=float))
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


# How the board can be mounted: flat (favoured), upside down, or on one of four side panels.
_MOUNT_FACES = (
    (0.4, np.eye(3)),
    (0.12, _rotation([1, 0, 0], np.pi)),
    (0.12, _rotation([1, 0, 0], np.pi / 2)),
    (0.12, _rotation([1, 0, 0], -np.pi / 2)),
    (0.12, _rotation([0, 1, 0], np.pi / 2)),
    (0.12, _rotation([0, 1, 0], -np.pi / 2)),
)


def _draw_machine(rng: np.random.Generator) -> _Machine:
    uniform = rng.uniform
    motor_hz = uniform(140, 300)
    pump_db = uniform(-36, -26)
    face_probabilities = np.array([p for p, _ in _MOUNT_FACES])
    face = _MOUNT_FACES[rng.choice(len(_MOUNT_FACES), p=face_probabilities)][1]
    tilt = _rotation([*rng.normal(size=2), 0.0], np.deg2rad(uniform(0, 20)))
    yaw = _rotation([0, 0, 1], uniform(0, 2 * np.pi))
    n_motor = 24
    n_pump = 70
    return _Machine(
        mains_hz=50.0 if rng.random() < 0.6 else 60.0,
        motor_hz=motor_hz,
        burr_hz=uniform(4, 12),  # conical burrs turn at 250-700 rpm
        grinder_db=pump_db + uniform(8, 18),  # the loudest thing in the kitchen
        burr_to_motor_db=uniform(-6, 6),
        motor_harmonics=np.arange(1, n_motor + 1) ** -uniform(0.5, 1.2)
        * 10 ** (rng.normal(0, 5, n_motor) / 20),
        burr_band=(uniform(800, 2000), uniform(5000, 7500)),
        pump_db=pump_db,
        flow_to_buzz_db=uniform(-6, 4),
        pump_harmonics=np.arange(1, n_pump + 1) ** -uniform(0.7, 1.3)
        * 10 ** (rng.normal(0, 6, n_pump) / 20),
        flow_band=(uniform(250, 700), uniform(1800, 3500)),
        # Kept well below the pump: a machine whose extraction drowns in the room's noise
        # would be unlabellable by ear, and by vibration too.
        psu_hum_db=min(uniform(-62, -46), pump_db - 12),
        room_db=min(uniform(-64, -48), pump_db - 18),
        room_tilt=uniform(0.6, 1.6),
        mic_gain_db=uniform(-6, 6),
        mic_highpass_hz=uniform(30, 160),
        mic_noise_db=uniform(-76, -68),
        coupling=float(np.exp(uniform(np.log(0.6), np.log(1.6)))),
        mount_hz=uniform(15, 35),
        rotation=face @ tilt @ yaw,
        grind_vib=uniform(0.25, 0.8),
        pump_vib=uniform(0.2, 0.6),
        knock_vib=uniform(0.6, 1.5),
        knock_hz=uniform(1.5, 4.0),
        extract_vib=uniform(0.003, 0.02),
        floor_vib=uniform(0.003, 0.02),
        appliance_vib=uniform(0.003, 0.02) if rng.random() < 0.5 else 0.0,
        sensor_noise=uniform(0.01, 0.03),  # MEMS at 100 Hz: 150-400 ug/sqrt(Hz)
        accel_scale=1 + rng.normal(0, 0.01, 3),
        accel_offset=rng.normal(0, 0.05, 3),
        pump_axis=_unit(np.array([*rng.normal(size=2), 0.4 * rng.normal()])),
        knock_axis=_unit(rng.normal(size=3)),
        burr_axis=_unit(np.array([*rng.normal(size=2), 0.3 * rng.normal()])),
    )


def _slow_drift(rng: np.random.Generator, n: int, rate: float, period_s: float) -> np.ndarray:
    """Smooth zero-mean unit-variance wander: Gaussian points every `period_s`, interpolated.

    Interpolated at 1 kHz at most and held in between: the wander is far slower than that,
    and interpolating every audio sample was a tenth of the generation time.
    """
    hold = max(1, int(rate // 1000))
    coarse_n = -(-n // hold)
    coarse_rate = rate / hold
    points = int(np.ceil(coarse_n / coarse_rate / period_s)) + 2
    knots = rng.normal(size=points)
    coarse = np.interp(np.arange(coarse_n) / coarse_rate / period_s, np.arange(points), knots)
    return np.repeat(coarse, hold)[:n]


def _band_noise(rng: np.random.Generator, n: int, rate: float, low: float, high: float
                ) -> np.ndarray:
    """White noise band-passed to [low, high] Hz, unit RMS."""
    sos = sps.butter(4, [low, min(high, 0.45 * rate)], btype="bandpass", fs=rate, output="sos")
    noise = sps.sosfilt(sos, rng.normal(size=n))
    return noise / np.sqrt(np.mean(noise**2))


def _lowpass_noise(rng: np.random.Generator, n: int, rate: float, cutoff: float) -> np.ndarray:
    """White noise low-passed at `cutoff` Hz, unit RMS."""
    sos = sps.butter(2, cutoff, btype="lowpass", fs=rate, output="sos")
    noise = sps.sosfilt(sos, rng.normal(size=n))
    return noise / np.sqrt(np.mean(noise**2))


def _coloured_noise(rng: np.random.Generator, n: int, rate: float, tilt: float) -> np.ndarray:
    """Noise with power ~ f^-tilt above 20 Hz (room tone), unit RMS.

    Shaped in the frequency domain from complex Gaussian bins (the spectrum of white noise),
    which saves transforming white noise first.
    """
    bins = n // 2 + 1
    spectrum = rng.normal(size=bins) + 1j * rng.normal(size=bins)
    freqs = np.maximum(np.fft.rfftfreq(n, 1 / rate), 20.0)
    noise = np.fft.irfft(spectrum * np.exp(np.log(freqs) * (-tilt / 2)), n)
    return noise / np.sqrt(np.mean(noise**2))


def _periodic(cycles: np.ndarray, harmonics: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """A periodic waveform with the given harmonic amplitudes, unit RMS, at `cycles` (turns).

    Built as a wavetable and read with linear interpolation: cost independent of the number
    of harmonics, which matters for the pump's buzz (tens of mains harmonics).
    """
    table_size = 4096
    spectrum = np.zeros(table_size // 2 + 1, dtype=complex)
    spectrum[1:len(harmonics) + 1] = harmonics * np.exp(1j * phases)
    table = np.fft.irfft(spectrum, table_size)
    table /= np.sqrt(np.mean(table**2))
    wrapped = np.append(table, table[0])
    position = cycles * table_size  # cycles are positive: truncation is floor
    index = position.astype(np.int64)
    fraction = position - index
    index &= table_size - 1
    left = wrapped[index]
    return left + fraction * (wrapped[index + 1] - left)


def _cycles(rng: np.random.Generator, frequency: np.ndarray, rate: float) -> np.ndarray:
    """Turns of an oscillator whose frequency (Hz) varies sample by sample."""
    return rng.random() + np.cumsum(frequency) / rate


def _harmonics_below(amplitudes: np.ndarray, fundamental: float, limit: float) -> np.ndarray:
    """The amplitudes with harmonics above `limit` Hz dropped (no aliasing)."""
    count = int(min(len(amplitudes), np.floor(limit / fundamental)))
    return amplitudes[:count]


def _db(level_db: float | np.ndarray) -> float | np.ndarray:
    return 10 ** (np.asarray(level_db) / 20)


def _transients(rng: np.random.Generator, n: int, rate: float, per_second: float,
                freq_range: tuple[float, float], decay_range: tuple[float, float]
                ) -> np.ndarray:
    """Sum of decaying sinusoids at Poisson times (clinks, bumps), each of peak amplitude ~1."""
    out = np.zeros(n)
    count = rng.poisson(per_second * n / rate)
    for _ in range(count):  # a handful per run: a loop over events, not samples
        start = rng.integers(0, n)
        decay = rng.uniform(*decay_range)
        length = min(n - start, int(5 * decay * rate))
        t = np.arange(length) / rate
        out[start:start + length] += (rng.uniform(0.3, 1.0) * np.exp(-t / decay)
                                      * np.sin(2 * np.pi * rng.uniform(*freq_range) * t))
    return out


_CLICK_HIGHPASS = sps.butter(2, 1500, btype="highpass", fs=AUDIO_RATE, output="sos")


@dataclass(frozen=True)
class _Run:
    """The slow state of one run, at `MOTION_RATE`, shared by the microphone and the
    accelerometer so that the pair stays physically consistent (the grinder the microphone
    hears slowing down is the one the accelerometer feels slowing down)."""

    mains_hz: np.ndarray
    motor_hz: np.ndarray   # grinder motor speed (only meaningful for "grind")
    wander: np.ndarray     # zero-mean unit-variance wander of the stage's intensity


def _draw_run(machine: _Machine, seconds: int, rng: np.random.Generator) -> _Run:
    n = seconds * MOTION_RATE
    # Mains frequency wanders by a few hundredths of a hertz; the grinder slows by up to a
    # few per cent as beans load it.
    mains = machine.mains_hz * (1 + 0.0005 * _slow_drift(rng, n, MOTION_RATE, 4.0))
    load = 0.03 * rng.random()
    motor = machine.motor_hz * (1 - load + 0.02 * _slow_drift(rng, n, MOTION_RATE, 1.5))
    return _Run(mains, motor, _slow_drift(rng, n, MOTION_RATE, 1.5))


def _at_audio_rate(track: np.ndarray) -> np.ndarray:
    """A slow `MOTION_RATE` track held for each audio sample."""
    return np.repeat(track, AUDIO_RATE // MOTION_RATE)


def _simulate_audio(machine: _Machine, stage: str, run: _Run, rng: np.random.Generator
                    ) -> np.ndarray:
    """One continuous run of the microphone's int16-valued signal for a stage."""
    rate = AUDIO_RATE
    mains = _at_audio_rate(run.mains_hz)
    n = len(mains)
    nyquist_margin = 0.45 * rate

    # Background present in every stage, in dBFS at unit microphone gain.
    room = _db(machine.room_db + rng.normal(0, 2)) * _coloured_noise(rng, n, rate,
                                                                    machine.room_tilt)
    psu_harmonics = np.zeros(8)
    psu_harmonics[1::2] = [1.0, 0.4, 0.2, 0.1]  # 2x, 4x, 6x, 8x mains: transformer hum
    hum = _db(machine.psu_hum_db) * _periodic(_cycles(rng, mains, rate), psu_harmonics,
                                              rng.uniform(0, 2 * np.pi, 8))
    clinks = _db(machine.room_db + 22) * _transients(rng, n, rate, 0.25, (2000, 7000),
                                                    (0.01, 0.06))
    sound = room + hum + clinks

    if stage == "grind":
        speed = _at_audio_rate(run.motor_hz)
        harmonics = _harmonics_below(machine.motor_harmonics, speed.max(), nyquist_margin)
        motor = _periodic(_cycles(rng, speed, rate), harmonics,
                          rng.uniform(0, 2 * np.pi, len(harmonics)))
        # Burr noise: friction hiss plus the clicks of beans fracturing (sharp, so
        # broadband up to the top of the audio band), both swelling as the burrs turn.
        burr_turns = _cycles(rng, speed * machine.burr_hz / machine.motor_hz, rate)
        modulation = 1 + 0.6 * np.sin(2 * np.pi * burr_turns)
        fractures = (rng.random(n) < 400 / rate) * rng.exponential(1.0, n)
        clicks = sps.sosfilt(_CLICK_HIGHPASS, fractures)
        clicks /= np.sqrt(np.mean(clicks**2))
        burr = (_band_noise(rng, n, rate, *machine.burr_band) + clicks) * modulation
        burr /= np.sqrt(np.mean(burr**2))
        level = _db(machine.grinder_db + rng.normal(0, 1.5)) * (
            1 + 0.1 * _at_audio_rate(run.wander))
        sound += level * (motor + _db(machine.burr_to_motor_db + rng.normal(0, 2)) * burr)
    elif stage in ("pump", "extract"):
        # Same pump either way; the extraction adds a little hiss (flow through the puck and
        # into the cup) and loses a little buzz (the pump is loaded). The offsets are smaller
        # than the spread between machines, on purpose: by ear the two are hard to tell apart.
        offset_db = PUMP_EXTRACT_OFFSET_DB * (1 if stage == "extract" else -1)
        harmonics = _harmonics_below(machine.pump_harmonics, machine.mains_hz * 1.01,
                                     nyquist_margin)
        buzz = _periodic(_cycles(rng, mains, rate), harmonics,
                         rng.uniform(0, 2 * np.pi, len(harmonics)))
        flow = _band_noise(rng, n, rate, *machine.flow_band)
        buzz_db = machine.pump_db - offset_db + rng.normal(0, 1.5)
        flow_db = machine.pump_db + machine.flow_to_buzz_db + offset_db + rng.normal(0, 1.5)
        wander = 1 + 0.08 * _at_audio_rate(run.wander)
        sound += wander * (_db(buzz_db) * buzz + _db(flow_db) * flow)

    # Microphone: gain, low-frequency roll-off, self-noise, int16 conversion.
    sos = sps.butter(2, machine.mic_highpass_hz, btype="highpass", fs=rate, output="sos")
    sound = sps.sosfilt(sos, sound * _db(machine.mic_gain_db))
    sound += _db(machine.mic_noise_db) * rng.normal(size=n)
    return np.clip(np.round(sound * INT16_FULL_SCALE), -32768, 32767)


def _simulate_accel(machine: _Machine, stage: str, run: _Run, rng: np.random.Generator
                    ) -> np.ndarray:
    """One continuous run of the accelerometer (m/s^2, gravity included) for a stage."""
    rate = MOTION_RATE
    n = len(run.mains_hz)
    vertical = np.array([0.0, 0.0, 1.0])

    # Motion of the chassis in the machine frame (x, y horizontal, z up), m/s^2.
    floor = machine.floor_vib * _lowpass_noise(rng, n, rate, 20.0)
    motion = floor[:, None] * _unit(np.array([0.2, 0.2, 1.0]))
    if machine.appliance_vib:
        hum = machine.appliance_vib * np.sin(2 * np.pi * _cycles(rng, run.mains_hz, rate))
        motion += hum[:, None] * vertical
    bumps = 0.08 * _transients(rng, n, rate, 0.08, (4, 15), (0.05, 0.2))
    motion += bumps[:, None] * _unit(rng.normal(size=3))

    if stage == "grind":
        # Rotating imbalance: a circle in the horizontal plane at the motor speed...
        motor_turns = _cycles(rng, run.motor_hz, rate)
        imbalance = 0.5 * machine.grind_vib * np.stack(
            [np.cos(2 * np.pi * motor_turns), np.sin(2 * np.pi * motor_turns),
             np.zeros(n)], axis=1)
        # ...the burrs' rotation rocking the chassis, and the crunch of beans.
        burr_turns = _cycles(rng, run.motor_hz * machine.burr_hz / machine.motor_hz, rate)
        rocking = machine.grind_vib * (np.sin(2 * np.pi * burr_turns)
                                       + 0.4 * np.sin(4 * np.pi * burr_turns + 1.0))
        crunch = 0.5 * machine.grind_vib * _band_noise(rng, n, rate, 5, 45)
        level = 1 + 0.15 * run.wander
        motion += level[:, None] * (imbalance + rocking[:, None] * machine.burr_axis
                                    + crunch[:, None] * _unit(rng.normal(size=3)))
    elif stage == "pump":
        # Working against the closed circuit, the piston strokes hard at the mains
        # frequency...
        stroke = np.sin(2 * np.pi * _cycles(rng, run.mains_hz, rate))
        stroke *= machine.pump_vib * (1 + 0.1 * run.wander)
        # ...and the solenoid valve's pulses knock the chassis, ringing the mount's resonance.
        period = rate / (machine.knock_hz * (1 + 0.05 * rng.normal()))
        starts = np.arange(rng.uniform(0, period), n, period).astype(int)
        impulses = np.zeros(n)
        impulses[starts] = rng.uniform(0.6, 1.0, len(starts))
        ring_t = np.arange(int(0.4 * rate)) / rate
        ring = np.exp(-ring_t / 0.08) * np.sin(2 * np.pi * machine.mount_hz * ring_t)
        knocks = machine.knock_vib * np.convolve(impulses, ring)[:n]
        motion += stroke[:, None] * machine.pump_axis + knocks[:, None] * machine.knock_axis
    elif stage == "extract":
        # Loaded by the puck, the pump barely strokes; the flow rumbles a little, at about
        # the level of the floor's own vibration.
        stroke = 0.15 * machine.extract_vib * np.sin(2 * np.pi * _cycles(rng, run.mains_hz,
                                                                           rate))
        flow = machine.extract_vib * _lowpass_noise(rng, n, rate, 15.0)
        motion += stroke[:, None] * machine.pump_axis + flow[:, None] * vertical

    motion *= machine.coupling
    # The sensor measures specific force: +g upwards at rest, rotated into its own frame.
    specific_force = (motion + GRAVITY * vertical) @ machine.rotation.T
    # Integrating decimator: the mean of the motion over each 10 ms output period.
    decimation = MOTION_RATE // ACCEL_RATE
    accel = specific_force.reshape(-1, decimation, 3).mean(axis=1)
    accel = accel * machine.accel_scale + machine.accel_offset
    accel += machine.sensor_noise * rng.normal(size=accel.shape)
    # numpy rounds by dividing a whole count by 10**4, which gives the float nearest the
    # decimal reading: its repr is short (9.825, not 9.825000000000001), so JSON is compact.
    return np.round(accel, ACCEL_DECIMALS)


def _stream(seed: int, *key: int) -> np.random.Generator:
    """An independent generator per machine (and stage): machine k is the same whatever the
    number of machines asked for."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def generate(n_machines: int = 12, windows_per_stage: int = 40, seed: int = 0) -> CoffeeDataset:
    """Simulate `n_machines` machines, each running every stage for `windows_per_stage` s.

    Parameters
    ----------
    n_machines : int
        Simulated machines (each in its own kitchen, with its own sensors).
    windows_per_stage : int
        1 s windows per machine and stage, cut one after the other from one continuous run.
    seed : int
        Non-negative; the same seed gives the same arrays, bit for bit.

    Returns
    -------
    CoffeeDataset
        ``n_machines * len(STAGES) * windows_per_stage`` windows, ordered by machine, then
        stage (in `STAGES` order), then time.
    """
    if n_machines < 1 or windows_per_stage < 1:
        raise ValueError("n_machines and windows_per_stage must be at least 1")
    if seed < 0:
        raise ValueError("seed must be non-negative")
    total = n_machines * len(STAGES) * windows_per_stage
    ds = CoffeeDataset(np.empty((total, AUDIO_WINDOW)), np.empty((total, ACCEL_WINDOW, 3)),
                       np.empty(total, dtype=np.int64), np.empty(total, dtype=np.int64))
    start = 0
    for machine_id in range(n_machines):
        machine = _draw_machine(_stream(seed, machine_id))
        for stage_index, stage in enumerate(STAGES):
            rng = _stream(seed, machine_id, stage_index + 1)
            run = _draw_run(machine, windows_per_stage, rng)
            windows = slice(start, start + windows_per_stage)
            ds.audio[windows] = _simulate_audio(machine, stage, run, rng).reshape(
                windows_per_stage, AUDIO_WINDOW)
            ds.accel[windows] = _simulate_accel(machine, stage, run, rng).reshape(
                windows_per_stage, ACCEL_WINDOW, 3)
            ds.labels[windows] = stage_index
            ds.machines[windows] = machine_id
            start += windows_per_stage
    return ds


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------

def split_by_machine(ds: CoffeeDataset, test_fraction: float = 0.25, seed: int = 0
                     ) -> tuple[CoffeeDataset, CoffeeDataset]:
    """Split into train and test sets with no machine in both.

    Parameters
    ----------
    ds : CoffeeDataset
        At least two machines.
    test_fraction : float
        Fraction of the machines held out for testing, in (0, 1); at least one machine goes
        to each side.
    seed : int
        Which machines are held out.

    Returns
    -------
    tuple of CoffeeDataset
        (train, test), each in the original order.
    """
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be in (0, 1)")
    ids = np.unique(ds.machines)
    if len(ids) < 2:
        raise ValueError("need at least two machines to split by machine")
    n_test = int(np.clip(round(test_fraction * len(ids)), 1, len(ids) - 1))
    test_ids = np.random.default_rng(seed).permutation(ids)[:n_test]
    is_test = np.isin(ds.machines, test_ids)
    return ds.subset(~is_test), ds.subset(is_test)


def machine_folds(ds: CoffeeDataset, folds: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Cross-validation folds by machine: a boolean test mask per fold.

    Every machine is tested in exactly one fold and never trained on in that fold.
    """
    ids = np.random.default_rng(seed).permutation(np.unique(ds.machines))
    if not 2 <= folds <= len(ids):
        raise ValueError(f"folds must be between 2 and the number of machines ({len(ids)})")
    return [np.isin(ds.machines, group) for group in np.array_split(ids, folds)]


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def _check_common_rate(rate: int) -> None:
    if rate <= 0 or AUDIO_RATE % rate or rate % ACCEL_RATE:
        raise ValueError(f"rate must divide {AUDIO_RATE} Hz and be a multiple of "
                         f"{ACCEL_RATE} Hz; got {rate}")


def to_common_rate(ds: CoffeeDataset, rate: int = AUDIO_RATE) -> np.ndarray:
    """Audio and accelerometer at one rate, as written to acquisition JSON.

    Parameters
    ----------
    ds : CoffeeDataset
        The windows.
    rate : int
        Hz; divides 16000 and is a multiple of 100. The audio is decimated with an
        anti-aliasing polyphase filter and rounded to integers when below 16 kHz; each
        accelerometer reading is held (zero-order hold) for ``rate / 100`` samples.

    Returns
    -------
    numpy.ndarray
        (n, rate * 1 s, 4) float64: audio, accX, accY, accZ.
    """
    _check_common_rate(rate)
    accel = np.repeat(ds.accel, rate // ACCEL_RATE, axis=1)
    return np.concatenate([_audio_at(ds.audio, rate)[:, :, None], accel], axis=2)


def _audio_at(audio: np.ndarray, rate: int) -> np.ndarray:
    """int16-valued audio at `rate` Hz (anti-aliased decimation below 16 kHz)."""
    _check_common_rate(rate)
    if rate == AUDIO_RATE:
        return audio
    decimated = sps.resample_poly(audio, 1, AUDIO_RATE // rate, axis=1)
    return np.clip(np.round(decimated), -32768, 32767)


def write_acquisition_json(ds: CoffeeDataset, out_dir: Path, rate: int = AUDIO_RATE
                           ) -> list[Path]:
    """Write one Edge Impulse acquisition JSON file per window.

    Parameters
    ----------
    ds : CoffeeDataset
        The windows.
    out_dir : pathlib.Path
        Created if missing.
    rate : int
        The common rate in Hz (see `to_common_rate`); 16000 keeps the audio intact.

    Returns
    -------
    list of pathlib.Path
        The files, one per window in dataset order, named ``<label>.m<machine>-w<index>.json``
        (Studio infers the label from the part before the first dot). Unsigned: ``alg`` is
        ``"none"`` and the signature 64 zeros. About 0.5 MB per file at 16 kHz.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    audio = _audio_at(ds.audio, rate).astype(np.int64)
    hold = rate // ACCEL_RATE
    header = json.dumps({
        "protected": {"ver": "v1", "alg": "none"},
        "signature": EI_EMPTY_SIGNATURE,
        "payload": {
            "device_type": EI_DEVICE_TYPE,
            "interval_ms": 1000.0 / rate,
            "sensors": [{"name": name, "units": units} for name, units in EI_SENSORS],
        },
    }, separators=(",", ":"))
    paths = []
    for index in range(len(ds)):
        # Written by hand rather than through json.dumps of 16,000 small lists: 10 times
        # faster. Audio as integers; each accelerometer reading is formatted once (repr, as
        # json does: the shortest text that parses back to the same float64) and held.
        readings = [f"{x!r},{y!r},{z!r}" for x, y, z in ds.accel[index].tolist()]
        rows = ",".join(f"[{sample},{readings[i // hold]}]"
                        for i, sample in enumerate(audio[index].tolist()))
        label = STAGES[int(ds.labels[index])]
        path = out_dir / f"{label}.m{int(ds.machines[index]):03d}-w{index:05d}.json"
        # The payload is the document's last member: its values go before the closing braces.
        path.write_text(f'{header[:-2]},"values":[{rows}]}}}}')
        paths.append(path)
    return paths


def read_acquisition_json(path: Path) -> tuple[str, float, list[str], np.ndarray]:
    """Read a file written by `write_acquisition_json`.

    Returns
    -------
    tuple
        (label inferred from the file name, rate in Hz, sensor names, values of shape
        (samples, sensors) float64).
    """
    path = Path(path)
    document = json.loads(path.read_text())
    payload = document["payload"]
    names = [sensor["name"] for sensor in payload["sensors"]]
    values = np.asarray(payload["values"], dtype=np.float64).reshape(-1, len(names))
    return path.name.split(".")[0], 1000.0 / payload["interval_ms"], names, values


def save_npz(ds: CoffeeDataset, path: Path, **metadata: int) -> Path:
    """Save compressed: audio as int16 (exact), the rest as is, plus `metadata` (ints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, audio=ds.audio.astype(np.int16), accel=ds.accel,
                        labels=ds.labels, machines=ds.machines, stages=np.array(STAGES),
                        **{key: np.array(value) for key, value in metadata.items()})
    return path


def load_npz(path: Path) -> CoffeeDataset:
    """Load a file written by `save_npz` (audio back to float64)."""
    with np.load(Path(path)) as data:
        return CoffeeDataset(data["audio"].astype(np.float64), data["accel"],
                             data["labels"], data["machines"])


# --------------------------------------------------------------------------------------------
# Measurement: does fusion matter?
# --------------------------------------------------------------------------------------------

# The seed tutorial's spectrogram front-end (models/README.md).
SPECTROGRAM_PARAMS = {"frame_length": 0.032, "frame_stride": 0.024, "fft_length": 128,
                      "noise_floor_db": -85}
# Bin edges in Hz: 5 Hz bands from 0.5 Hz (above DC) to the Nyquist frequency, included.
VIBRATION_BAND_EDGES_HZ = (0.5, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50.5)


def audio_features(audio: np.ndarray) -> np.ndarray:
    """Mean log power per frequency bin: the project's spectrogram block (tutorial config),
    averaged over the window's frames.

    Parameters
    ----------
    audio : numpy.ndarray
        (n, 16000) int16-valued audio at 16 kHz.

    Returns
    -------
    numpy.ndarray
        (n, 65): one value per 125 Hz bin, in the block's noise-floor-relative dB scale.
    """
    from dsp.audio.spectrogram import spectrogram

    chunk = 256  # the block frames every window at once: bound the memory it takes
    return np.concatenate([
        spectrogram(audio[i:i + chunk, :, None], AUDIO_RATE, 4,
                    **SPECTROGRAM_PARAMS).mean(axis=1)
        for i in range(0, len(audio), chunk)])


def vibration_features(accel: np.ndarray) -> np.ndarray:
    """Log RMS and log band powers of the accelerometer's vibration, summed over the axes.

    Parameters
    ----------
    accel : numpy.ndarray
        (n, 100, 3) m/s^2 at 100 Hz.

    Returns
    -------
    numpy.ndarray
        (n, 11): log10 of the RMS of the vibration vector (each axis's mean, gravity and
        offsets, removed), then log10 of its power in the 5 Hz bands between
        `VIBRATION_BAND_EDGES_HZ` (Hann window, summed over x, y and z). Summing over the axes
        makes the features independent of how the sensor is mounted; per-axis features let a
        linear model learn mounting-specific patterns that do not carry over to new machines
        (see models/coffee_dataset_report.md).
    """
    ac = accel - accel.mean(axis=1, keepdims=True)
    power = np.mean(ac**2, axis=(1, 2)) * 3  # summed over the axes
    spectrum = (np.abs(np.fft.rfft(ac * np.hanning(ac.shape[1])[None, :, None], axis=1)) ** 2
                ).sum(axis=2)
    band_of_bin = np.digitize(np.fft.rfftfreq(ac.shape[1], 1 / ACCEL_RATE),
                              VIBRATION_BAND_EDGES_HZ) - 1
    bands = np.stack([spectrum[:, band_of_bin == band].sum(axis=1)
                      for band in range(len(VIBRATION_BAND_EDGES_HZ) - 1)], axis=1)
    floor = 1e-12  # keeps the log finite for a perfectly still, noiseless sensor
    return np.concatenate([0.5 * np.log10(power[:, None] + floor), np.log10(bands + floor)],
                          axis=1)


@dataclass
class Measurement:
    """Accuracies on held-out machines (see `measure`)."""

    sizes: dict
    accuracy: dict          # modality -> pooled 4-class accuracy
    fold_accuracy: dict     # modality -> accuracy per fold
    confusion: dict         # modality -> (4, 4) counts, rows true, columns predicted
    pair_accuracy: dict     # (stage_a, stage_b) -> modality -> pooled binary accuracy
    best_single_feature: tuple  # (feature name, pooled 4-class accuracy)


def _classifier():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))


def _single_feature_classifier():
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(max_depth=2, random_state=0)


def feature_names() -> list[str]:
    """Names of the fused features, audio (`audio_features`) then vibration."""
    bin_hz = AUDIO_RATE / SPECTROGRAM_PARAMS["fft_length"]
    bins = SPECTROGRAM_PARAMS["fft_length"] // 2 + 1
    audio = [f"audio {k * bin_hz:.0f} Hz" for k in range(bins)]
    edges = VIBRATION_BAND_EDGES_HZ
    vibration = ["vibration RMS"] + [f"vibration {low:g}-{min(high, ACCEL_RATE / 2):g} Hz"
                                     for low, high in zip(edges[:-1], edges[1:])]
    return audio + vibration


def measure(ds: CoffeeDataset, folds: int = 4, seed: int = 0) -> Measurement:
    """Audio-only, vibration-only and fused accuracy on machines never trained on.

    Logistic regression on standardised `audio_features`, `vibration_features` or both
    concatenated; cross-validated by machine (`machine_folds`), predictions pooled over the
    folds. Pairwise figures train a binary classifier on the two stages only. The best single
    feature is the fused feature a depth-2 decision tree does best with alone.

    Parameters
    ----------
    ds : CoffeeDataset
        At least `folds` machines.
    folds : int
        Machine folds.
    seed : int
        Which machines go to which fold.

    Returns
    -------
    Measurement
        Pooled and per-fold accuracies, confusion matrices, pairwise accuracies and the best
        single feature.
    """
    audio = audio_features(ds.audio)
    vibration = vibration_features(ds.accel)
    features = {"audio": audio, "vibration": vibration,
                "fused": np.concatenate([audio, vibration], axis=1)}
    test_masks = machine_folds(ds, folds, seed)

    def predict(x: np.ndarray, selection: np.ndarray) -> tuple[np.ndarray, list[float]]:
        predicted = np.full(len(ds), -1)
        per_fold = []
        for test in test_masks:
            train, held_out = selection & ~test, selection & test
            model = _classifier().fit(x[train], ds.labels[train])
            predicted[held_out] = model.predict(x[held_out])
            per_fold.append(float(np.mean(predicted[held_out] == ds.labels[held_out])))
        return predicted, per_fold

    everything = np.ones(len(ds), dtype=bool)
    accuracy, fold_accuracy, confusion = {}, {}, {}
    for name, x in features.items():
        predicted, per_fold = predict(x, everything)
        accuracy[name] = float(np.mean(predicted == ds.labels))
        fold_accuracy[name] = per_fold
        confusion[name] = np.array([[np.sum((ds.labels == t) & (predicted == p))
                                     for p in range(len(STAGES))] for t in range(len(STAGES))])
    pair_accuracy = {}
    for a in range(len(STAGES)):
        for b in range(a + 1, len(STAGES)):
            pair = np.isin(ds.labels, [a, b])
            pair_accuracy[(STAGES[a], STAGES[b])] = {
                name: float(np.mean(predict(x, pair)[0][pair] == ds.labels[pair]))
                for name, x in features.items()}
    # The best any one feature does alone: a depth-2 tree (three thresholds, so one interval
    # per stage), same folds.
    names = feature_names()
    if len(names) != features["fused"].shape[1]:  # feature functions swapped for a study
        names = [f"feature {k}" for k in range(features["fused"].shape[1])]
    single = []
    for column in range(features["fused"].shape[1]):
        correct = 0
        for test in test_masks:
            tree = _single_feature_classifier().fit(features["fused"][~test, column:column + 1],
                                                    ds.labels[~test])
            correct += np.sum(tree.predict(features["fused"][test, column:column + 1])
                              == ds.labels[test])
        single.append(correct / len(ds))
    best = int(np.argmax(single))
    sizes = {"windows": len(ds), "machines": int(len(np.unique(ds.machines))), "folds": folds,
             "audio_features": audio.shape[1], "vibration_features": vibration.shape[1]}
    return Measurement(sizes, accuracy, fold_accuracy, confusion, pair_accuracy,
                       (names[best], float(single[best])))


def format_measurement(result: Measurement) -> str:
    """Markdown tables of a `Measurement`."""
    modalities = ("audio", "vibration", "fused")
    sizes = result.sizes
    lines = [f"{sizes['windows']} windows from {sizes['machines']} machines, {sizes['folds']} "
             f"folds by machine; {sizes['audio_features']} audio and "
             f"{sizes['vibration_features']} vibration features.", "",
             "| features | accuracy (pooled) | per fold |", "|---|---|---|"]
    for name in modalities:
        folds = ", ".join(f"{100 * a:.1f}" for a in result.fold_accuracy[name])
        lines.append(f"| {name} | {100 * result.accuracy[name]:.1f} % | {folds} |")
    name, single = result.best_single_feature
    lines += ["", f"Best single feature: {name}, {100 * single:.1f} % (a depth-2 tree on that "
              "feature alone, same folds)."]
    lines += ["", "Binary accuracy for each pair of stages (a classifier trained on those two "
              "only, same machine folds):", "",
              "| pair | audio | vibration | fused |", "|---|---|---|---|"]
    for (a, b), by_modality in result.pair_accuracy.items():
        cells = " | ".join(f"{100 * by_modality[m]:.1f} %" for m in modalities)
        lines.append(f"| {a} vs {b} | {cells} |")
    for name in modalities:
        lines += ["", f"Confusion, {name} (rows: true stage, columns: predicted):", "",
                  "| true \\ predicted | " + " | ".join(STAGES) + " |",
                  "|---" * (len(STAGES) + 1) + "|"]
        for stage, row in zip(STAGES, result.confusion[name]):
            lines.append(f"| {stage} | " + " | ".join(str(int(v)) for v in row) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line: generate, write (npz or Edge Impulse JSON) and/or measure."""
    parser = argparse.ArgumentParser(
        prog="python -m models.coffee_dataset",
        description="Simulated coffee-machine dataset (audio 16 kHz + accelerometer 100 Hz).")
    parser.add_argument("--out", type=Path, help="output directory")
    parser.add_argument("--format", choices=("npz", "ei-json"), default="npz",
                        help="npz: one coffee_dataset.npz; ei-json: Edge Impulse acquisition "
                             "JSON files in training/ and testing/ (split by machine)")
    parser.add_argument("--machines", type=int, default=12)
    parser.add_argument("--windows-per-stage", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=int, default=AUDIO_RATE,
                        help="ei-json: the common sampling rate in Hz (default 16000)")
    parser.add_argument("--test-fraction", type=float, default=0.25,
                        help="ei-json: fraction of machines written to testing/")
    parser.add_argument("--measure", action="store_true",
                        help="print audio-only, vibration-only and fused accuracy on held-out "
                             "machines (needs scikit-learn)")
    parser.add_argument("--folds", type=int, default=4, help="--measure: machine folds")
    args = parser.parse_args(argv)
    if args.out is None and not args.measure:
        parser.error("give --out DIR and/or --measure")

    started = time.perf_counter()
    try:
        ds = generate(args.machines, args.windows_per_stage, args.seed)
        if args.out is not None and args.format == "ei-json":
            _check_common_rate(args.rate)
    except ValueError as error:
        parser.error(str(error))
    elapsed = time.perf_counter() - started
    print(f"generated {len(ds)} windows ({args.machines} machines x {len(STAGES)} stages x "
          f"{args.windows_per_stage} s, seed {args.seed}) in {elapsed:.1f} s", file=sys.stderr)

    if args.out is not None:
        if args.format == "npz":
            path = save_npz(ds, args.out / "coffee_dataset.npz", seed=args.seed,
                            audio_rate=AUDIO_RATE, accel_rate=ACCEL_RATE)
            print(path)
        else:
            train, test = split_by_machine(ds, args.test_fraction, args.seed)
            for part, name in ((train, "training"), (test, "testing")):
                paths = write_acquisition_json(part, args.out / name, args.rate)
                print(f"{len(paths)} files in {args.out / name}")
    if args.measure:
        started = time.perf_counter()
        result = measure(ds, args.folds, args.seed)
        print(f"measured in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        print(f"seed {args.seed}, {args.machines} machines, {args.windows_per_stage} windows per "
              f"stage, {args.folds} machine folds\n")
        print(format_measurement(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
