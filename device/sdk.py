"""`make device-sdk`: the folder a user copies into an Edge Impulse C++ export to run our
fuzzy-off-arm and kalman blocks on the device.

    python -m device.sdk [OUT]      # default dist/ei-fusion-blocks

It holds our C (device/lib), the adapters (extract_<cppType>_features), VQF's C++ from the pinned
vqf package's source distribution under vqf/ with its licence, and a README saying what to add
to the build.
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from device import build

DEFAULT_OUT = build.ROOT / "dist" / "ei-fusion-blocks"
ADAPTER_HEADERS = ("ei_fusion_blocks.h", "ei_fusion_adapter.hpp")

# The MIT licence's text (SPDX "MIT"), which VQF's files name by identifier only; the copyright
# line is taken from the files themselves.
MIT_TEXT = """Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT
OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""

README = """# Fuzzy-off-arm and Kalman blocks for an Edge Impulse C++ export

Made by `make device-sdk` from the DSP block server's `device/` folder (vqf {vqf_version}).

1. Copy this folder into your project beside the export's `edge-impulse-sdk/` and
   `model-parameters/` folders.
2. Add every `.c` and `.cpp` file of this folder's top level to your build (not those in `vqf/`:
   `vqf_single_precision.cpp` compiles VQF's `vqf/vqf.cpp` in float32), and this folder and the
   export's root to the include path. C11 and C++11 or later; no heap; only `<math.h>`.
3. The export calls `extract_fuzzy_off_arm_features` and `extract_kalman_features` itself. Call
   `ei_fusion_blocks_reset();` where your application starts a new stream (for example right
   after `run_classifier_init()`), so the filters' state starts anew.

Errors come back from `run_classifier()` as `EI_IMPULSE_DSP_ERROR`; `ei_fusion_blocks_last_error()`
says why. Compile-time maxima (override with `-D`): see the top of `fuzzy_off_arm.h`,
`kalman.h` and `ei_fusion_blocks.h`. VQF is MIT-licensed: `vqf/LICENSE`.
"""


def _vqf_copyright(source: Path) -> str:
    lines = re.findall(r"SPDX-FileCopyrightText:\s*(.+)", source.read_text())
    if not lines:
        raise build.BuildError(f"{source} names no copyright holder")
    return "\n".join(f"Copyright (c) {line.strip()}" for line in dict.fromkeys(lines))


def write_sdk(out: Path = DEFAULT_OUT) -> Path:
    vqf_root = build.vqf_sources()
    if out.exists() and any(out.iterdir()):
        # Replaced whole only when it is a folder this command wrote: never someone's project.
        readme = out / "README.md"
        if not (readme.exists() and readme.read_text().startswith(README.splitlines()[0])):
            raise build.BuildError(f"{out} exists and is not a folder `make device-sdk` wrote; "
                                   "choose an empty or new folder (SDK_OUT=...)")
        shutil.rmtree(out)
    (out / "vqf").mkdir(parents=True)
    for path in build.library_sources() + build.library_headers():
        shutil.copy2(path, out / path.name)
    for path in build.adapter_sources():
        shutil.copy2(path, out / path.name)
    for name in ADAPTER_HEADERS:
        shutil.copy2(build.EDGE_IMPULSE / name, out / name)
    for path in build.vqf_files(vqf_root):
        shutil.copy2(path, out / "vqf" / path.name)
    shutil.copy2(vqf_root / "vqf" / "PKG-INFO", out / "vqf" / "PKG-INFO")
    copyright_lines = _vqf_copyright(vqf_root / "vqf" / "vqf.cpp")
    (out / "vqf" / "LICENSE").write_text(
        f"VQF (vqf/cpp of the vqf {build.vqf_version()} source distribution on PyPI), SPDX-License-Identifier: MIT\n\n"
        f"MIT License\n\n{copyright_lines}\n\n{MIT_TEXT}")
    (out / "README.md").write_text(README.format(vqf_version=build.vqf_version()))
    return out


def main(argv: list[str]) -> int:
    out = Path(argv[0]).resolve() if argv else DEFAULT_OUT
    try:
        print(write_sdk(out))
    except build.BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
