"""The blocks this server hosts, by URL name."""
from __future__ import annotations

from dsp.block import Block

DEFAULT_ROOT_BLOCK = "spectrogram"


def all_blocks() -> dict[str, Block]:
    """Every block the server hosts, keyed by the name in its URL prefix `/blocks/<name>/`."""
    # Imported here so that importing the registry costs nothing until an app is built.
    from dsp import mfcc, mfe, spectral_analysis, spectrogram

    blocks = [spectrogram.BLOCK, mfe.BLOCK, mfcc.BLOCK, spectral_analysis.BLOCK]
    return {block.name: block for block in blocks}
