"""The blocks this server hosts, by URL name."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from dsp.core.block import Block

DEFAULT_ROOT_BLOCK = "embeddings"


def all_blocks(embeddings_model: "Optional[str | Path]" = None) -> dict[str, Block]:
    """Every block the server hosts, keyed by the name in its URL prefix `/blocks/<name>/`.

    embeddings_model: the model's metadata JSON or .tflite; default env `EMBEDDINGS_MODEL`, else
    the shipped default model. A model, or the orientation filters' C library, that cannot be
    loaded stops the caller with SystemExit and a one-line message naming the path and the reason.
    """
    # Imported here so that importing the registry costs nothing until an app is built.
    from dsp.audio import mfcc, mfe, spectrogram
    from dsp.core.errors import ConfigurationError
    from dsp.embeddings.block import make_block as make_embeddings_block
    from dsp.embeddings.model import DEFAULT_MODEL, ModelLoadError, load_model
    from dsp.fusion import kalman, off_arm, orientation, orientation_library
    from dsp.spectral import spectral_analysis

    frontends = {block.name: block for block in (spectrogram.BLOCK, mfe.BLOCK, mfcc.BLOCK)}
    model_path = embeddings_model or os.environ.get("EMBEDDINGS_MODEL") or DEFAULT_MODEL
    try:
        embeddings_block = make_embeddings_block(load_model(model_path), frontends)
    except (ModelLoadError, ConfigurationError) as exc:
        raise SystemExit(f"Cannot load the embeddings model: {exc}") from None
    # Loaded here, at start: without its C library the kalman block could answer no request.
    try:
        orientation.load_library()
    except orientation_library.LibraryError as exc:
        raise SystemExit(str(exc)) from None
    blocks = [embeddings_block, *frontends.values(), spectral_analysis.BLOCK, off_arm.BLOCK, kalman.BLOCK]
    return {block.name: block for block in blocks}
