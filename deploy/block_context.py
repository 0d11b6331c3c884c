"""One block's folder for `edge-impulse-blocks init` and `push`: `python -m deploy.block_context BLOCK OUT`.

The CLI reads only `./parameters.json`, takes the port from the Dockerfile's first EXPOSE line and
ties a folder to one hosted block (`.ei-block-config`), so each block Studio should list needs a
folder of its own. The folder holds:

- the repository's Dockerfile, with `DSP_BLOCK` and `DSP_BLOCKS` set to the block (it is the root
  block and the only one hosted); the models' COPY is dropped unless the block is `embeddings`,
  and the orientation filters' build stage unless it is `kalman`;
- the block's parameters.json, from the registry (what the server serves at `/parameters`),
  written with 4-space indentation, as the CLI rewrites it on the first push;
- exactly the files the Dockerfile COPYs from the context, and a `.dockerignore`.
"""
from __future__ import annotations

import glob
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Optional

from dsp.registry import BLOCK_NAMES, all_blocks

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
# Written by `edge-impulse-blocks init`: kept when the folder is regenerated, so the next push
# updates the same hosted block instead of asking to create another.
BLOCK_CONFIG = ".ei-block-config"
# Made by this module, not copied: a COPY of it is satisfied by the generated file.
GENERATED = {"parameters.json", "Dockerfile", ".dockerignore"}


class ContextError(Exception):
    """A block or folder this module cannot make a context for; the message is one line."""


# --- the Dockerfile ---------------------------------------------------------------------------

def instructions(text: str) -> list[tuple[int, int, list[str]]]:
    """(first line, last line, words) of each instruction; continuation lines joined, comments skipped."""
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start, joined = i, stripped
        while joined.endswith("\\") and i + 1 < len(lines):
            i += 1
            joined = joined[:-1] + " " + lines[i].strip()
        found.append((start, i, joined.split()))
        i += 1
    return found


def first_expose_port(text: str) -> str:
    """The port of the first EXPOSE line, which the CLI and the runner read (a bare number)."""
    for _, _, words in instructions(text):
        if words[0].upper() == "EXPOSE":
            if len(words) != 2 or not words[1].isdigit():
                raise ContextError(f"the Dockerfile's first EXPOSE is {' '.join(words)!r}, not a bare port number")
            return words[1]
    raise ContextError("the Dockerfile has no EXPOSE line")


def copy_sources(text: str) -> list[str]:
    """The context paths (files, folders ending in /, globs) the Dockerfile's COPY/ADD lines read."""
    sources = []
    for _, _, words in instructions(text):
        if words[0].upper() not in ("COPY", "ADD"):
            continue
        args = [word for word in words[1:] if not word.startswith("--")]
        if any(word.startswith("--from=") for word in words[1:]):
            continue  # from another stage, not from the context
        sources.extend(args[:-1])
    return sources


def _drop_lines(lines: list[str], start: int, end: int, with_comment: bool = True) -> None:
    """Blank out lines start..end and, if with_comment, the comment lines directly above them."""
    if with_comment:
        while start > 0 and lines[start - 1] is not None and lines[start - 1].lstrip().startswith("#"):
            start -= 1
    for i in range(start, end + 1):
        lines[i] = None  # type: ignore[call-overload]


def block_dockerfile(block: str, text: Optional[str] = None) -> str:
    """The repository's Dockerfile for a one-block image of `block`."""
    text = DOCKERFILE.read_text() if text is None else text
    lines: list = text.splitlines()
    found = instructions(text)
    stages = [(start, words) for start, _, words in found if words[0].upper() == "FROM"]
    dropped_stages = set()
    for start, end, words in found:
        op = words[0].upper()
        sources = [w for w in words[1:-1] if not w.startswith("--")] if op == "COPY" else []
        from_stage = next((w.split("=", 1)[1] for w in words[1:] if w.startswith("--from=")), None)
        if block != "embeddings" and sources and all(s.startswith("models/") for s in sources):
            _drop_lines(lines, start, end, with_comment=False)  # the model only loads for embeddings
        elif block != "kalman" and from_stage == "orientation-library":
            _drop_lines(lines, start, end)  # the C library only loads for kalman
            dropped_stages.add(from_stage)
    # A build stage nothing copies from any more: from its comment to the next FROM.
    for index, (start, words) in enumerate(stages):
        if len(words) >= 4 and words[2].upper() == "AS" and words[3] in dropped_stages:
            following = stages[index + 1][0] if index + 1 < len(stages) else len(lines)
            while following > start and lines[following - 1] is not None and lines[following - 1].lstrip().startswith("#"):
                following -= 1  # the next stage's own comment stays
            _drop_lines(lines, start, following - 1)
    entrypoint = next(start for start, _, words in found if words[0].upper() == "ENTRYPOINT")
    # Just before ENTRYPOINT, so the layers above it are the repository image's (shared build cache).
    lines[entrypoint] = (f"# This folder's block (make block-context): the root block at / and the only one hosted.\n"
                         f"ENV DSP_BLOCK={block} DSP_BLOCKS={block}\n{lines[entrypoint]}")
    kept = [line for line in lines if line is not None]
    # No runs of blank lines where a dropped part was.
    out: list[str] = []
    for line in kept:
        if not line.strip() and (not out or not out[-1].strip()):
            continue
        out.append(line)
    return "\n".join(out).rstrip("\n") + "\n"


# --- .dockerignore ------------------------------------------------------------------------------

def ignore_rules(text: Optional[str] = None) -> list[str]:
    text = DOCKERIGNORE.read_text() if text is None else text
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _rule_regex(rule: str) -> re.Pattern:
    parts = re.split(r"(\*\*/?|\*|\?)", rule.strip("/"))
    pattern = "".join({"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(p, re.escape(p)) for p in parts)
    return re.compile(pattern + r"\Z")


def is_ignored(relative: str, rules: list[str]) -> bool:
    """Whether a context path is left out by the rules (as Docker: the path or one of its parents matches)."""
    parts = relative.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for rule in rules:
        negate = rule.startswith("!")
        regex = _rule_regex(rule[1:] if negate else rule)
        if any(regex.match(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def block_dockerignore() -> str:
    rules = ignore_rules()
    return ("# `edge-impulse-blocks push` packs this folder with these rules (the repository's): they keep out\n"
            "# what running the server here or the tools would add.\n" + "\n".join(rules) + "\n")


# --- the folder ----------------------------------------------------------------------------------

def context_files(dockerfile: str, rules: Optional[list[str]] = None) -> list[str]:
    """Every repository file (relative path) the Dockerfile's COPYs send, minus the generated ones."""
    rules = ignore_rules() if rules is None else rules
    files: set[str] = set()
    for source in copy_sources(dockerfile):
        if source.rstrip("/") in GENERATED:
            continue
        matches = sorted(glob.glob(source.rstrip("/"), root_dir=ROOT))
        if not matches:
            raise ContextError(f"the Dockerfile copies {source}, which is not in the repository")
        for match in matches:
            path = ROOT / match
            candidates = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
            for candidate in candidates:
                relative = candidate.relative_to(ROOT).as_posix()
                if not is_ignored(relative, rules):
                    files.add(relative)
    return sorted(files)


def block_parameters(block: str) -> dict:
    """The block's parameters.json as the server serves it (GET /parameters with DSP_BLOCK=block)."""
    return all_blocks(names=block)[block].parameters


def parameters_text(parameters: dict) -> str:
    # JSON.stringify(value, null, 4), which the CLI writes back: a first push then changes nothing.
    return json.dumps(parameters, indent=4, ensure_ascii=False)


def _prepare(out: Path) -> None:
    """An empty folder at `out`, keeping `.ei-block-config`; refuses folders this module did not make."""
    resolved = out.resolve()
    if resolved == ROOT or ROOT.is_relative_to(resolved):
        raise ContextError(f"{out} is the repository or holds it; choose another folder (default dist/<block>)")
    if not resolved.exists():
        resolved.mkdir(parents=True)
        return
    if not resolved.is_dir():
        raise ContextError(f"{out} is not a folder")
    entries = [entry for entry in resolved.iterdir() if entry.name != BLOCK_CONFIG]
    if entries and not ((resolved / "Dockerfile").is_file() and (resolved / "parameters.json").is_file()):
        raise ContextError(f"{out} is not empty and is not a block context; choose another folder")
    for entry in entries:
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def write_context(block: str, out: "str | Path") -> Path:
    """Write `block`'s folder at `out`; return its path."""
    if block not in BLOCK_NAMES:
        raise ContextError(f"unknown block {block!r}; blocks: {', '.join(BLOCK_NAMES)}")
    dockerfile = block_dockerfile(block)
    port = first_expose_port(dockerfile)
    parameters = block_parameters(block)
    info = parameters.get("info", {})
    problems = [f"info.port is {info.get('port')!r}, the Dockerfile exposes {port}"] if str(info.get("port")) != port else []
    problems += [f"type is {parameters.get('type')!r}, not 'dsp'"] if parameters.get("type") != "dsp" else []
    problems += [f"version is {parameters.get('version')!r}, not 1"] if parameters.get("version") != 1 else []
    problems += [f"info.{key} is missing" for key in ("name", "description") if not info.get(key)]
    if problems:
        raise ContextError(f"{block}'s parameters.json cannot be pushed: {'; '.join(problems)}")
    files = context_files(dockerfile)
    out = Path(out)
    _prepare(out)
    for relative in files:
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    (out / "Dockerfile").write_text(dockerfile)
    (out / ".dockerignore").write_text(block_dockerignore())
    (out / "parameters.json").write_text(parameters_text(parameters), encoding="utf-8")
    return out


def main(argv: Optional[list[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        raise SystemExit(f"usage: python -m deploy.block_context BLOCK [OUT]; blocks: {', '.join(BLOCK_NAMES)}")
    block = args[0]
    out = args[1] if len(args) == 2 else f"dist/{block}"
    try:
        path = write_context(block, out)
    except ContextError as exc:
        raise SystemExit(f"block-context: {exc}") from None
    print(f"{path}: {block}'s block folder; push it with: cd {path} && edge-impulse-blocks init && edge-impulse-blocks push")


if __name__ == "__main__":
    main()
