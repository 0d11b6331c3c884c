"""Where the shared recordings live: `$SHARED_DIR/data`, else `../shared/data` beside the repo.

They are read by tests and evaluations only, never copied into the repository.
"""
from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA = (Path(os.environ["SHARED_DIR"]) if os.environ.get("SHARED_DIR")
               else Path(__file__).resolve().parents[2] / "shared") / "data"
BROAD_DIR = SHARED_DATA / "broad"
XIO_LOG = SHARED_DATA / "xio_fusion" / "sensor_data.npz"
# Edge Impulse's SDK type headers (Apache-2.0 snapshot), for compiling the device adapters.
EI_DSP_TYPES = SHARED_DATA.parent / "device" / "ei-sdk-tflm" / "ei-dsp-types"
