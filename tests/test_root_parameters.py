"""The top-level parameters.json is what `edge-impulse-blocks push` registers: it must be the root block's."""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_root_parameters_json_is_the_default_root_blocks(client):
    on_disk = json.loads((ROOT / "parameters.json").read_text())
    served = client.get("/parameters").get_json()
    assert on_disk == served, "run `make parameters.json` after changing the root block's parameters"


def test_every_block_declares_the_exposed_port(client):
    for block in client.get("/blocks").get_json():
        spec = client.get(block["prefix"] + "parameters").get_json()
        assert spec["info"]["port"] == 4446, block["name"]


def _version_gated(spec: dict) -> bool:
    return any("showForImplementationVersion" in item
               for group in spec["parameters"] for item in group.get("items", []))


def test_blocks_with_versions_ask_studio_to_pass_the_version(client):
    # Without hasImplementationVersion Studio does not send implementation_version to a custom
    # block, so an impulse made on version 3 would silently get the latest's features.
    versioned = []
    for block in client.get("/blocks").get_json():
        spec = client.get(block["prefix"] + "parameters").get_json()
        if spec["info"]["latestImplementationVersion"] > 1 or _version_gated(spec):
            versioned.append(block["name"])
            assert spec["info"].get("hasImplementationVersion") is True, block["name"]
    assert {"spectrogram", "mfe", "mfcc", "spectral-analysis"} <= set(versioned)
