"""Parity with Edge Impulse's own DSP blocks, case by case, through the HTTP protocol.

Cases: the public golden records copied (gzipped) into tests/golden/, plus any other records found
under ../shared/golden/ or $GOLDEN_DIR (for example cases kept back for independent checks),
de-duplicated by id. Tolerances are the ones measured in ../shared/golden/README.md.
"""
from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
SOURCES = [HERE / "golden", HERE.parent.parent / "shared" / "golden"]
if os.environ.get("GOLDEN_DIR"):
    SOURCES.append(Path(os.environ["GOLDEN_DIR"]))

BLOCK_NAMES = {"spectrogram": "spectrogram", "mfe": "mfe", "mfcc": "mfcc",
               "spectral_analysis": "spectral-analysis"}

# What our error message must mention for each kind of official error (theirs, lower-cased).
ERROR_PHRASES = [
    (r"power of 2", ["power of 2"]),
    (r"frame length is larger than your window", ["frame", "window"]),
    (r"decimation is only supported in implementation version 4", ["decimation", "4"]),
    (r"above nyquist", ["nyquist"]),
    (r"mel filterbank contains all zeros", ["filter"]),
    (r"", []),
]


def _load_records() -> list[dict]:
    records: dict[str, dict] = {}
    for source in SOURCES:
        if not source.is_dir():
            continue
        for path in sorted(source.rglob("*.jsonl*")):
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        record = json.loads(line)
                        records.setdefault(record["id"], record)
    return list(records.values())


RECORDS = _load_records()


def _tolerance(block: str, version: int) -> tuple[float, float]:
    """(rtol, atol) from the golden README."""
    if block == "mfcc":
        return 1e-5, 1e-5
    if block == "spectral_analysis":
        return (1e-5, 1e-5) if version == 1 else (1e-3, 1e-3)
    return 1e-6, 1e-6


def _run(client, record: dict) -> dict:
    body = {
        "features": record["raw_data"],
        "axes": record["axes"],
        "sampling_freq": record["sampling_freq"],
        "implementation_version": record["implementation_version"],
        "params": record["params"],
        "draw_graphs": False,
    }
    response = client.post(f"/blocks/{BLOCK_NAMES[record['block']]}/run", json=body)
    assert response.status_code == 200
    return response.get_json()


def test_public_cases_are_all_present():
    ids = {r["id"] for r in RECORDS}
    counts = json.loads((HERE / "golden" / "manifest.json").read_text())["counts"]
    assert len([i for i in ids if "-public-" in i]) == sum(counts.values())


@pytest.mark.parametrize("record", [r for r in RECORDS if "error" not in r], ids=lambda r: r["id"])
def test_features_match_official(client, record):
    payload = _run(client, record)
    assert payload["success"] is True, payload.get("error")
    ours = np.asarray(payload["features"], dtype=np.float64)
    theirs = np.asarray(record["features"], dtype=np.float64)
    assert ours.shape == theirs.shape
    assert np.isfinite(ours).all()
    assert payload["fft_used"] == record["fft_used"]
    expected_config = record["output_config"]
    assert payload["output_config"]["type"] == expected_config["type"]
    for key, value in expected_config["shape"].items():
        assert payload["output_config"]["shape"][key] == pytest.approx(value)
    if "labels" in record:
        assert payload["labels"] == record["labels"]
    if "degenerate_input" in record.get("flags", []):
        return  # informational: outputs of exactly-constant input depend on rounding noise
    keep = np.ones(theirs.shape, dtype=bool)
    keep[record.get("unstable_feature_indices", [])] = False
    ours, theirs = ours[keep], theirs[keep]
    rtol, atol = _tolerance(record["block"], record["implementation_version"])
    close = np.isclose(ours, theirs, rtol=rtol, atol=atol)
    if record["block"] == "mfe" and record["implementation_version"] >= 3:
        # Outputs are k/256: a float32 rounding flip moves a value by exactly one step.
        one_step = np.isclose(np.abs(ours - theirs), 1 / 256, atol=1e-6)
        assert np.count_nonzero(~close & ~one_step) == 0
        assert np.count_nonzero(~close) <= 0.001 * theirs.size
    else:
        worst = np.max(np.abs(ours - theirs) - rtol * np.abs(theirs)) if theirs.size else 0
        assert close.all(), f"{np.count_nonzero(~close)} of {theirs.size} values off; worst excess {worst:.3g}"


@pytest.mark.parametrize("record", [r for r in RECORDS if "error" in r], ids=lambda r: r["id"])
def test_same_conditions_fail(client, record):
    payload = _run(client, record)
    assert payload["success"] is False
    official = record["error"].lower()
    phrases = next(p for pattern, p in ERROR_PHRASES if re.search(pattern, official))
    for phrase in phrases:
        assert phrase in payload["error"].lower(), (payload["error"], record["error"])
