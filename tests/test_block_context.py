"""`make block-context`: one folder per block that `edge-impulse-blocks init` and `push` take as is.

What the CLI (edge-impulse-cli 1.39.2) needs of the folder: `./parameters.json` with type dsp,
version 1, info.name and info.description, and info.port equal to the Dockerfile's first EXPOSE
(a bare number); it rewrites the file with 4-space indentation on the first push. It packs the
folder with `.dockerignore`'s rules and no size limit. The image built from one folder is checked
in test_container.py (kalman); here every block's folder is checked without a build, and its
server is started from a copy of the folder alone.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import block_context
from dsp.registry import BLOCK_NAMES

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def _instructions(path: Path) -> list[list[str]]:
    """A Dockerfile's instructions as word lists, continuation lines joined, comments dropped."""
    text = path.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [line.split() for line in lines if line and not line.startswith("#")]


def _env(path: Path) -> dict[str, str]:
    """The Dockerfile's ENV settings (KEY=VALUE form), later ones winning."""
    found = {}
    for words in _instructions(path):
        if words[0].upper() == "ENV":
            found.update(word.split("=", 1) for word in words[1:] if "=" in word)
    return found


def _first_expose(path: Path) -> list[str]:
    return next(words for words in _instructions(path) if words[0].upper() == "EXPOSE")


def _context_sources(path: Path) -> list[str]:
    sources = []
    for words in _instructions(path):
        if words[0].upper() == "COPY" and not any(w.startswith("--from=") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


@pytest.fixture(scope="module")
def contexts(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("contexts")
    return {block: block_context.write_context(block, out / block) for block in BLOCK_NAMES}


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_dockerfile_selects_the_block_and_keeps_the_first_expose(contexts, block):
    dockerfile = contexts[block] / "Dockerfile"
    assert _first_expose(dockerfile) == _first_expose(ROOT / "Dockerfile")
    # The first EXPOSE line itself, byte for byte: the CLI reads that line.
    first = lambda text: next(line for line in text.splitlines() if line.startswith("EXPOSE"))  # noqa: E731
    assert first(dockerfile.read_text()) == first((ROOT / "Dockerfile").read_text())
    env = _env(dockerfile)
    assert env["DSP_BLOCK"] == block and env["DSP_BLOCKS"] == block


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_parameters_json_is_what_push_needs_and_what_the_server_serves(contexts, block, client):
    text = (contexts[block] / "parameters.json").read_text(encoding="utf-8")
    spec = json.loads(text)
    # As the CLI writes it back (JSON.stringify with 4 spaces): the first push changes nothing.
    assert text == json.dumps(spec, indent=4, ensure_ascii=False)
    assert spec["type"] == "dsp" and spec["version"] == 1
    assert spec["info"]["name"] and spec["info"]["description"]
    assert str(spec["info"]["port"]) == _first_expose(contexts[block] / "Dockerfile")[1]
    assert spec == client.get(f"/blocks/{block}/parameters").get_json()


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_folder_holds_what_the_dockerfile_copies_and_nothing_ignored(contexts, block):
    folder = contexts[block]
    for source in _context_sources(folder / "Dockerfile"):
        assert glob.glob(source.rstrip("/"), root_dir=folder), f"{block}: the Dockerfile copies {source}, missing"
    rules = block_context.ignore_rules()
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    leaked = [f for f in files if block_context.is_ignored(f, rules)]
    assert not leaked, f"{block}: {leaked[:5]}"
    top = {p.name for p in folder.iterdir()}
    assert not top & {".git", ".venv", "tests", "bench", "build", ".ci", "dist", "features", "samples"}
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    # The folder's own rules are the repository's, for what a run in the folder would add.
    assert set(rules) <= set(block_context.ignore_rules((folder / ".dockerignore").read_text()))
    # Only the embeddings block loads a model; only kalman compiles the orientation filters.
    assert (folder / "models").exists() == (block == "embeddings")
    assert (block == "embeddings") == any(s.startswith("models/") for s in _context_sources(folder / "Dockerfile"))
    assert (folder / "device").exists() == (block == "kalman")
    assert ("orientation-library" in (folder / "Dockerfile").read_text()) == (block == "kalman")
    if block == "embeddings":
        assert (folder / "models" / "coffee-machine.json").is_file()


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_server_starts_from_a_copy_of_the_folder_alone(contexts, block, client, tmp_path):
    folder = tmp_path / block
    shutil.copytree(contexts[block], folder)
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "DSP_ORIENTATION_LIBRARY", "EMBEDDINGS_MODEL", "DSP_BLOCK", "DSP_BLOCKS")}
    env.update({key: value for key, value in _env(folder / "Dockerfile").items() if key.startswith("DSP_")})
    if block == "kalman":
        # What the Dockerfile's build stage runs, from the files it copies (here: the folder's).
        subprocess.run([PYTHON, "-m", "device.build", "server"], cwd=folder, env=env, check=True,
                       capture_output=True, timeout=120)
    probe = ("import json, dsp, dsp_server; c = dsp_server.create_app().test_client(); "
             "print(json.dumps({'files': [dsp.__file__, dsp_server.__file__], "
             "'parameters': c.get('/parameters').get_json(), "
             "'blocks': [b['name'] for b in c.get('/blocks').get_json()]}))")
    proc = subprocess.run([PYTHON, "-c", probe], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = json.loads(proc.stdout.splitlines()[-1])
    assert all(Path(f).resolve().is_relative_to(folder.resolve()) for f in answer["files"]), answer["files"]
    assert answer["parameters"] == client.get(f"/blocks/{block}/parameters").get_json()
    assert answer["blocks"] == [block]


def test_an_unknown_block_is_refused_in_one_line_listing_the_blocks(tmp_path):
    proc = subprocess.run([PYTHON, "-m", "deploy.block_context", "nope", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    message = proc.stderr.strip()
    assert "\n" not in message and "nope" in message
    assert all(block in message for block in BLOCK_NAMES)
    assert not (tmp_path / "out").exists()


def test_regenerating_keeps_the_ei_block_config_and_drops_stale_files(tmp_path):
    out = tmp_path / "fuzzy"
    block_context.write_context("fuzzy-off-arm", out)
    (out / ".ei-block-config").write_text('{"version": 1}')
    (out / "stale.txt").write_text("from an older run")
    block_context.write_context("fuzzy-off-arm", out)
    assert (out / ".ei-block-config").read_text() == '{"version": 1}'
    assert not (out / "stale.txt").exists()


def test_a_folder_that_is_no_block_context_is_left_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(block_context.ContextError, match="not empty"):
        block_context.write_context("kalman", tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(block_context.ContextError, match="repository"):
        block_context.write_context("kalman", ROOT)


def test_make_target_defaults_to_dist_block_and_takes_out(tmp_path):
    def command(*args: str) -> str:
        proc = subprocess.run(["make", "--no-print-directory", "-n", "block-context", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().splitlines()[-1]

    assert command("BLOCK=kalman").endswith("-m deploy.block_context kalman dist/kalman")
    assert command("BLOCK=kalman", f"OUT={tmp_path}").endswith(f"-m deploy.block_context kalman {tmp_path}")
    # No BLOCK: the module gets no arguments and answers with its usage and the blocks.
    assert command().endswith("-m deploy.block_context")


def test_hosting_one_block_loads_only_what_it_needs(monkeypatch):
    from dsp.registry import all_blocks

    # A one-block folder has no model: the other blocks must not try to load one.
    monkeypatch.setenv("EMBEDDINGS_MODEL", "/nonexistent/model.json")
    assert list(all_blocks(names="fuzzy-off-arm")) == ["fuzzy-off-arm"]
    with pytest.raises(SystemExit, match="embeddings model"):
        all_blocks(names="embeddings")
    with pytest.raises(SystemExit) as stopped:
        all_blocks(names="kalman,nope")
    assert "nope" in str(stopped.value) and "\n" not in str(stopped.value)
