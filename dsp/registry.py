"""The blocks this server hosts, by URL name."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from dsp.core.block import Block

DEFAULT_ROOT_BLOCK = "embeddings"
# Every block, in the order `/blocks` lists them.
BLOCK_NAMES = ("embeddings", "spectrogram", "mfe", "mfcc", "spectral-analysis", "fuzzy-off-arm", "kalman")
# Comma-separated subset to host (default: all). A one-block image (`make block-context`) sets it,
# so it needs neither the embeddings model nor, unless it is kalman, the orientation C library.
HOSTED_ENV = "DSP_BLOCKS"


def hosted_names(names: "Optional[str]" = None) -> tuple[str, ...]:
    """The blocks to host, in BLOCK_NAMES order: `names` (comma-separated), else env DSP_BLOCKS, else all."""
    text = names if names is not None else os.environ.get(HOSTED_ENV, "")
    wanted = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in BLOCK_NAMES]
    if unknown:
        raise SystemExit(f"{HOSTED_ENV}: {', '.join(unknown)} is not a block of this server; "
                         f"choose from: {', '.join(BLOCK_NAMES)}")
    return tuple(name for name in BLOCK_NAMES if not wanted or name in wanted)


def all_blocks(embeddings_model: "Optional[str | Path]" = None, names: "Optional[str]" = None) -> dict[str, Block]:
    """Every hosted block (`hosted_names(names)`), keyed by the name in its URL prefix `/blocks/<name>/`.

    embeddings_model: the model's metadata JSON or .tflite; default env `EMBEDDINGS_MODEL`, else
    the shipped default model. A model, or the orientation filters' C library, that cannot be
    loaded stops the caller with SystemExit and a one-line message naming the path and the reason;
    each is loaded only when its block is hosted.
    """
    hosted = hosted_names(names)
    # Imported here so that importing the registry costs nothing until an app is built.
    from dsp.audio import mfcc, mfe, spectrogram
    from dsp.core.errors import ConfigurationError
    from dsp.embeddings.block import make_block as make_embeddings_block
    from dsp.embeddings.model import DEFAULT_MODEL, ModelLoadError, load_model
    from dsp.fusion import kalman, off_arm, orientation, orientation_library
    from dsp.spectral import spectral_analysis

    frontends = {block.name: block for block in (spectrogram.BLOCK, mfe.BLOCK, mfcc.BLOCK)}
    blocks = {**frontends, spectral_analysis.BLOCK.name: spectral_analysis.BLOCK,
              off_arm.BLOCK.name: off_arm.BLOCK, kalman.BLOCK.name: kalman.BLOCK}
    if "embeddings" in hosted:
        model_path = embeddings_model or os.environ.get("EMBEDDINGS_MODEL") or DEFAULT_MODEL
        try:
            blocks["embeddings"] = make_embeddings_block(load_model(model_path), frontends)
        except (ModelLoadError, ConfigurationError) as exc:
            raise SystemExit(f"Cannot load the embeddings model: {exc}") from None
    if "kalman" in hosted:
        # Loaded here, at start: without its C library the kalman block could answer no request.
        try:
            orientation.load_library()
        except orientation_library.LibraryError as exc:
            raise SystemExit(str(exc)) from None
    return {name: blocks[name] for name in hosted}
