"""Baseline for `make bench`: a spectrogram server built the way Edge Impulse's official ones are.

Same design as `dsp-server.py` in edgeimpulse/example-custom-processing-block-python:
`ThreadingHTTPServer`, stdlib `json`, the body read by Content-Length, the feature function
called once per window with a numpy array made from the decoded list, features turned into
Python lists with `.tolist()`, the response written with `json.dumps`.

One deliberate difference makes the baseline *stronger*: it answers HTTP/1.1 with a
Content-Length, so clients keep the connection open (the official server answers HTTP/1.0 and
closes every connection, which would add a TCP handshake to each of its requests).

Run: `PORT=4447 python bench/reference_server.py`. Routes: GET `/`, POST `/run`, POST `/batch`.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def _samples(seconds: float, sampling_freq: float) -> int:
    # Edge Impulse's framing rounds up unless the excess is a float artefact (below 0.001).
    exact = seconds * sampling_freq
    return math.floor(exact) if exact - math.floor(exact) < 0.001 else math.ceil(exact)


def generate_features(implementation_version, draw_graphs, raw_data, axes, sampling_freq,
                      frame_length=0.02, frame_stride=0.02, fft_length=128, noise_floor_db=-52,
                      **_ignored):
    """Spectrogram of one single-axis window, as the official blocks compute it (v4 scaling).

    Parameters
    ----------
    implementation_version, draw_graphs, axes : as sent by Studio (unused here).
    raw_data : numpy.ndarray
        The window, one axis.
    sampling_freq : float
        In Hz.
    frame_length, frame_stride : float
        In seconds.
    fft_length : int
        FFT size; longer frames are truncated to it, shorter ones zero-padded.
    noise_floor_db : float
        In dB; values at the floor map to 0.

    Returns
    -------
    dict
        The official blocks' response shape: features (frames x bins, frame-major), graphs,
        labels, fft_used, output_config.
    """
    signal = np.asarray(raw_data, dtype=np.float64)
    frame_samples = _samples(frame_length, sampling_freq)
    stride_samples = _samples(frame_stride, sampling_freq)
    frames = (len(signal) - (frame_samples - stride_samples)) // stride_samples
    indices = (np.arange(frames)[:, None] * stride_samples) + np.arange(frame_samples)[None, :]
    framed = signal[indices]
    power = np.abs(np.fft.rfft(framed, n=fft_length, axis=1)) ** 2 / fft_length
    db = 10 * np.log10(np.maximum(power, 1e-30))
    features = np.maximum((db - noise_floor_db) / (-noise_floor_db + 12), 0.0)
    return {
        "features": features.flatten(),
        "graphs": [],
        "labels": [],
        "fft_used": [fft_length],
        "output_config": {"type": "spectrogram",
                          "shape": {"width": int(frames), "height": int(power.shape[1])}},
    }


def _has_named_param(func, name: str) -> bool:
    return name in inspect.signature(func).parameters


def _run(body: dict) -> dict:
    for key in ("params", "sampling_freq", "draw_graphs"):
        if key not in body:
            raise ValueError(f'Missing "{key}" in body')
    args = {"draw_graphs": body["draw_graphs"], "raw_data": np.array(body["features"]),
            "axes": np.array(body["axes"]), "sampling_freq": body["sampling_freq"],
            "implementation_version": body["implementation_version"], **body["params"]}
    processed = generate_features(**args)
    processed["features"] = processed["features"].tolist()
    return processed


def _batch(body: dict) -> dict:
    base_args = {"draw_graphs": False, "axes": np.array(body["axes"]),
                 "sampling_freq": body["sampling_freq"],
                 "implementation_version": body["implementation_version"], **body["params"]}
    features, labels, output_config = [], [], None
    for index, window in enumerate(body["features"]):
        args = dict(base_args, raw_data=np.array(window))
        # The official server checks the signature for every window; kept for the same cost.
        if _has_named_param(generate_features, "state"):
            args["state"] = None
        result = generate_features(**args)
        features.append(result["features"].tolist())
        if index == 0:
            labels, output_config = result["labels"], result["output_config"]
    return {"success": True, "features": features, "labels": labels,
            "output_config": output_config, "state": None}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; see the module docstring
    # With keep-alive, Nagle's algorithm holds the body's last segment until the client's delayed
    # ACK (40 ms on Linux); the official server never sees this because it closes the socket.
    disable_nagle_algorithm = True

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        if self.path == "/":
            self._send(200, "text/plain", b"Edge Impulse DSP block: Spectrogram (baseline) by bench")
        else:
            self._send(404, "text/plain", b"Invalid path " + self.path.encode() + b"\n")

    def do_POST(self):
        handlers = {"/run": _run, "/batch": _batch}
        content_length = int(self.headers.get("Content-Length"))
        raw = self.rfile.read(content_length)  # read even for a 404, so keep-alive stays in sync
        if self.path not in handlers:
            self._send(404, "text/plain", b"Invalid path " + self.path.encode() + b"\n")
            return
        try:
            payload = json.dumps(handlers[self.path](json.loads(raw.decode("utf-8"))))
        except Exception as exc:
            print("Failed to handle request", exc, traceback.format_exc())
            payload = json.dumps({"success": False, "error": str(exc)})
        self._send(200, "application/json", payload.encode())

    def log_message(self, format, *args):
        return  # as the official server: no per-request log


def main() -> None:
    host = os.environ.get("HOST", "0.0.0.0")
    port = int(os.environ.get("PORT", "4446"))
    server = ThreadingHTTPServer((host, port), Handler)
    print("Listening on host", host, "port", port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
