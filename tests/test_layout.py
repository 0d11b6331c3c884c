"""The packages of `dsp/` depend on each other in one direction only: `core` at the bottom,
the blocks' packages beside each other on top of it, `registry` and `datasets` above them all.
A newcomer can then read a package knowing everything it stands on is below it."""
import ast
from pathlib import Path

DSP = Path(__file__).resolve().parents[1] / "dsp"

# package -> the packages its modules may import (graphs and registry are single modules).
ALLOWED = {
    "core": set(),
    "graphs": set(),
    "audio": {"core", "graphs"},
    "spectral": {"core", "graphs"},
    "fusion": {"core", "graphs"},
    "embeddings": {"core", "audio", "graphs"},
    "registry": {"core", "audio", "spectral", "fusion", "embeddings"},
    "datasets": {"core", "registry"},
}


def _part(module: str) -> str:
    """`dsp.fusion.kalman` -> `fusion`; `dsp.graphs` -> `graphs`."""
    return module.split(".")[1]


def _imports(path: Path) -> set[str]:
    """Every dsp module `path` imports, at top level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dsp":
            found |= {f"dsp.{alias.name}" for alias in node.names} if node.module == "dsp" else {node.module}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "dsp"}
    return found


def test_every_module_lives_in_a_known_part():
    parts = {path.relative_to(DSP).parts[0].removesuffix(".py") for path in DSP.rglob("*.py")}
    assert parts - {"__init__"} == set(ALLOWED)


def test_no_package_imports_one_above_it():
    upward = []
    for path in DSP.rglob("*.py"):
        me = path.relative_to(DSP).parts[0].removesuffix(".py")
        for module in _imports(path):
            other = _part(module)
            if other != me and other not in ALLOWED.get(me, set()):
                upward.append(f"{path.relative_to(DSP.parent)} imports {module}")
    assert not upward, "\n".join(upward)
