"""`edge-impulse-blocks push` uploads the folder minus `.dockerignore`'s rules, with no size
limit: every folder the Makefile writes by default must be left out, or a user's extracted
dataset goes up with the block."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ignored() -> set[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return {line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")}


def _makefile_output_folders() -> set[str]:
    """Defaults of the Makefile's output variables (OUT, and target-specific ones like `samples: OUT = ...`)."""
    text = (ROOT / "Makefile").read_text()
    folders = set()
    for match in re.finditer(r"^(?:[\w.-]+:\s*)?\w*OUT\w*\s*[?:]?=\s*(\S+)\s*$", text, re.M):
        value = match.group(1)
        if "$" not in value:
            folders.add(value.strip("./").rstrip("/"))
    return folders


def test_the_makefile_has_output_folders_to_check():
    assert "features" in _makefile_output_folders()


def test_every_makefile_output_folder_is_dockerignored():
    missing = _makefile_output_folders() - _ignored()
    assert not missing, f"add {', '.join(sorted(missing))} to .dockerignore"


def test_the_venv_and_test_outputs_are_dockerignored():
    assert {".venv", ".git", "tests", "bench", ".pytest_cache", ".hypothesis", "build"} <= _ignored()
