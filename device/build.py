"""Builds the fusion blocks' C code: the host shared library (for `device.host` and the tests), the
Cortex-M4F firmware (for QEMU and the footprint) and the server's float64 library of the
orientation filters (`dsp.fusion.orientation` loads it; `make install` builds it).

Everything is built under `build/device/`, one folder per hash of the sources and flags, so an
unchanged tree is built once and parallel test workers share the result (a file lock serialises
the first build). VQF's C++ comes from the source distribution of the vqf version that
requirements.txt pins, downloaded once with pip into `build/device/`.

    python -m device.build host       # prints the shared library's path
    python -m device.build firmware   # prints the firmware's path (installs the cross tools if needed)
    python -m device.build server     # builds the server's library, installs it at SERVER_LIBRARY
"""
from __future__ import annotations

import fcntl
import hashlib
import html
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE = ROOT / "device"
LIB = DEVICE / "lib"
FIRMWARE = DEVICE / "firmware"
EDGE_IMPULSE = DEVICE / "edge_impulse"
SERVER = DEVICE / "server"
BUILD = ROOT / "build" / "device"
# Where the server looks for its library by default (dsp/fusion/orientation_library.py says so too).
SERVER_LIBRARY = ROOT / "build" / "server" / "liborientation_f64.so"
REQUIREMENTS = ROOT / "requirements.txt"

C_WARNINGS = ["-Wall", "-Wextra", "-Werror", "-Wdouble-promotion"]
C_STANDARD = ["-std=c11"]
CXX_FLAGS = ["-std=c++11", "-fno-exceptions", "-fno-rtti"]
HOST_FLAGS = ["-O2", "-fPIC"]
# The server's float64 build: -O3 and no semantic interposition (the library's own calls to its
# exported quaternion helpers get inlined) run the filters 5-15 % faster than -O2, with the same bits.
SERVER_FLAGS = ["-O3", "-fPIC", "-fno-semantic-interposition", "-DFUSION_REAL_DOUBLE"]
# The target: a Cortex-M4F with its single-precision FPU, optimised for size.
CORTEX_M4F = ["-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard", "-mthumb"]
# -fcallgraph-info=su: each object's call graph with every function's stack use (device.footprint).
DEVICE_FLAGS = CORTEX_M4F + ["-Os", "-ffunction-sections", "-fdata-sections", "-fstack-usage",
                             "-fcallgraph-info=su"]
CROSS_PACKAGES = ("gcc-arm-none-eabi", "libnewlib-arm-none-eabi", "libstdc++-arm-none-eabi-newlib",
                  "qemu-system-arm")
TOOLCHAIN_EXAMPLES = Path("/usr/share/doc/gcc-arm-none-eabi/examples")
# QEMU's mps2-an386: 4 MB of code memory at 0 and 4 MB of SRAM at 0x20000000.
MPS2_MEMORY = ("MEMORY\n{\n  FLASH (rx) : ORIGIN = 0x00000000, LENGTH = 0x400000\n"
               "  RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 0x400000\n}\n")
FIRMWARE_STACK_BYTES = 0x10000
FIRMWARE_HEAP_BYTES = 0x10000  # the harness's stdio buffers (semihosting files); the blocks use none


class BuildError(RuntimeError):
    """A compiler, the cross tools or VQF's sources are missing, or a compile failed."""


def library_sources() -> list[Path]:
    """Our C and C++ sources of the blocks (not the adapters, not the firmware harness)."""
    return sorted(p for p in LIB.iterdir() if p.suffix in (".c", ".cpp"))


def library_headers() -> list[Path]:
    return sorted(LIB.glob("*.h"))


# --- VQF's sources -----------------------------------------------------------------------------

def vqf_version() -> str:
    match = re.search(r"^vqf==(\S+)", REQUIREMENTS.read_text(), re.MULTILINE)
    if not match:
        raise BuildError("requirements.txt pins no vqf version")
    return match.group(1)


def vqf_sources() -> Path:
    """The include root of VQF's sources: `vqf/vqf.hpp`, `vqf/vqf.cpp` and `vqf/PKG-INFO` from
    the pinned vqf sdist, unmodified (`device/lib/vqf_single_precision.cpp` compiles them)."""
    version = vqf_version()
    root = BUILD / f"vqf-{version}"
    folder = root / "vqf"
    if (folder / "vqf.cpp").exists():
        return root
    with _locked():
        if (folder / "vqf.cpp").exists():
            return root
        with tempfile.TemporaryDirectory() as scratch:
            archive_path = _download_sdist("vqf", version, Path(scratch))
            staging = Path(scratch) / "vqf"
            staging.mkdir()
            wanted = {f"vqf-{version}/vqf/cpp/vqf.hpp": "vqf.hpp", f"vqf-{version}/vqf/cpp/vqf.cpp": "vqf.cpp",
                      f"vqf-{version}/PKG-INFO": "PKG-INFO"}
            with tarfile.open(archive_path) as archive:
                for member, name in wanted.items():
                    data = archive.extractfile(member)
                    if data is None:
                        raise BuildError(f"the vqf {version} sdist has no {member}")
                    (staging / name).write_bytes(data.read())
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(folder, ignore_errors=True)
            shutil.move(str(staging), folder)
    return root


def _download_sdist(name: str, version: str, folder: Path) -> Path:
    """The package's source archive from the registry's simple index (PEP 503), its sha256
    checked against the index's; pip download as the fallback. Only the archive is fetched: pip
    would also run vqf's setup.py, which fetches Cython to write metadata we do not need."""
    filename = f"{name}-{version}.tar.gz"
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    try:
        with urllib.request.urlopen(f"{index}/{name}/", timeout=60) as response:
            page = response.read().decode()
        match = re.search(rf'href="([^"]*{re.escape(filename)})#sha256=([0-9a-f]{{64}})"', page)
        if match:
            url, digest = urllib.parse.urljoin(f"{index}/{name}/", html.unescape(match.group(1))), match.group(2)
            with urllib.request.urlopen(url, timeout=120) as response:
                data = response.read()
            if hashlib.sha256(data).hexdigest() == digest:
                (folder / filename).write_bytes(data)
                return folder / filename
    except (OSError, ValueError):
        pass
    command = [sys.executable, "-m", "pip", "download", f"{name}=={version}", "--no-binary", ":all:",
               "--no-deps", "--no-build-isolation", "--disable-pip-version-check", "-q", "-d", str(folder)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0 or not (folder / filename).exists():
        raise BuildError(f"could not download the {name} {version} source distribution:\n{proc.stdout}{proc.stderr}")
    return folder / filename


def vqf_files(root: Path) -> list[Path]:
    return [root / "vqf" / "vqf.hpp", root / "vqf" / "vqf.cpp"]


# --- host library -------------------------------------------------------------------------------

def host_compilers() -> tuple[str, str]:
    cc = c_compiler()
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        raise BuildError(f"no C++ compiler found ({cxx}); install one (Debian: apt-get install g++) or set CXX")
    return cc, cxx


def host_library() -> Path:
    """The blocks (and VQF) as one shared library for this machine, built if needed."""
    cc, cxx = host_compilers()
    vqf = vqf_sources()
    sources = library_sources()
    key = _key([cc, cxx, *HOST_FLAGS], sources + library_headers() + vqf_files(vqf))
    output = BUILD / f"host-{key}" / "libfusion_blocks.so"
    return _built_once(output, _shared_library(
        lambda source, obj: _compile(cc, cxx, source, obj, HOST_FLAGS, vqf), sources, cxx, output.name))


# --- the server's float64 orientation filters --------------------------------------------------

def server_sources() -> list[Path]:
    """The orientation filters and their float64 entry point: all the server needs (no VQF, which
    the server runs through the vqf package)."""
    return [LIB / "orientation_filters.c", SERVER / "orientation_server.c"]


def server_headers() -> list[Path]:
    return [LIB / "orientation_filters.h", LIB / "fusion_window.h"]


def c_compiler() -> str:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise BuildError(f"no C compiler found ({cc}); install one (Debian: apt-get install gcc libc6-dev) "
                         "or set CC")
    return cc


def server_library() -> Path:
    """The server's library, built if needed, in its own folder per hash of sources and flags."""
    cc = c_compiler()
    sources = server_sources()
    key = _key([cc, *SERVER_FLAGS], sources + server_headers())
    output = BUILD / f"server-{key}" / SERVER_LIBRARY.name

    def compile_source(source: Path, obj: Path) -> None:
        _run([cc, *SERVER_FLAGS, *C_STANDARD, *C_WARNINGS, f"-I{LIB}", "-c", str(source), "-o", str(obj)])

    return _built_once(output, _shared_library(compile_source, sources, cc, output.name))


def install_server_library(target: Path = SERVER_LIBRARY) -> Path:
    """server_library(), copied to `target` when that differs. The copy replaces the file in one
    step, so a running server keeps the library it loaded."""
    built = server_library()
    if target.exists() and target.read_bytes() == built.read_bytes():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked():
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as handle:
            handle.write(built.read_bytes())
        os.chmod(handle.name, 0o755)
        os.replace(handle.name, target)
    return target


def _compile(cc: str, cxx: str, source: Path, obj: Path, flags: list[str], vqf: Path) -> None:
    if source.suffix == ".cpp":
        _run([cxx, *flags, *CXX_FLAGS, *C_WARNINGS, f"-I{LIB}", f"-I{vqf}", "-c", str(source), "-o", str(obj)])
    else:
        _run([cc, *flags, *C_STANDARD, *C_WARNINGS, f"-I{LIB}", "-c", str(source), "-o", str(obj)])


# --- the Edge Impulse adapters, as an export compiles them ----------------------------------------

def adapter_sources() -> list[Path]:
    """What a user adds to an export: the adapters and their shared part (not the check's engine)."""
    return [EDGE_IMPULSE / name for name in ("ei_fusion_blocks.cpp", "ei_fuzzy_off_arm.cpp", "ei_kalman.cpp")]


def adapter_harness(sdk_types: Path, named_axes: bool = True) -> Path:
    """The harness running windows through `extract_<cppType>_features`, compiled for this machine
    against the SDK's type headers in `sdk_types` and a `model_metadata.h` written as Studio
    writes it from our parameters.json files."""
    from device.studio_config import model_metadata_header
    from dsp.core.block import load_parameters

    cc, cxx = host_compilers()
    vqf = vqf_sources()
    header = model_metadata_header([load_parameters("fuzzy-off-arm"), load_parameters("kalman")], named_axes)
    sdk_headers = sorted(sdk_types.rglob("*.h*"))
    harness = [FIRMWARE / "harness.c", EDGE_IMPULSE / "harness_engine_ei.cpp"]
    sources = library_sources() + adapter_sources() + harness
    flags = ["-O2", f"named_axes={named_axes}", header]
    key = _key([cc, cxx, *flags], sources + library_headers() + vqf_files(vqf) + sdk_headers +
               sorted(EDGE_IMPULSE.glob("*.h*")) + sorted(FIRMWARE.glob("*.h")))
    output = BUILD / f"adapter-{key}" / "adapter_harness"

    def make(scratch: Path) -> Path:
        (scratch / "model-parameters").mkdir()
        (scratch / "model-parameters" / "model_metadata.h").write_text(header)
        includes = [f"-I{LIB}", f"-I{vqf}", f"-I{FIRMWARE}", f"-I{EDGE_IMPULSE}", "-isystem", str(sdk_types),
                    f"-I{scratch}"]
        objects = []
        for source in sources:
            obj = scratch / (source.name + ".o")
            if source.suffix == ".c":
                _run([cc, "-O2", *C_STANDARD, *C_WARNINGS, "-DHARNESS_HOST", *includes, "-c", str(source),
                      "-o", str(obj)])
            else:
                _run([cxx, "-O2", "-std=c++14", f"-DEI_FUSION_CONFIG_HAS_NAMED_AXES={int(named_axes)}",
                      "-Wall", "-Wextra", "-Werror", *includes, "-c", str(source), "-o", str(obj)])
            objects.append(str(obj))
        executable = scratch / output.name
        _run([cxx, "-o", str(executable), *objects, "-lm"])
        return executable

    return _built_once(output, make)


# --- Cortex-M4F firmware ------------------------------------------------------------------------

def cross_tools_reason() -> str | None:
    """None when the cross compiler and QEMU are there (installing them from Debian's packages as
    root if they are not), else why they cannot be had."""
    if shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm") and \
            (TOOLCHAIN_EXAMPLES / "startup" / "startup_ARMCM4.S").exists():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return ("arm-none-eabi-gcc or qemu-system-arm is missing and cannot be installed here (needs root "
                f"and apt-get): apt-get install {' '.join(CROSS_PACKAGES)}")
    return apt_install(CROSS_PACKAGES)


def apt_install(packages: tuple[str, ...], path: str | None = None) -> str | None:
    """Install Debian packages (as root, one apt at a time): None when done, else why not."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", **({"PATH": path} if path else {})}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    with _locked("apt"):
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            # A fresh machine may have no (or stale) package lists: refresh once and retry.
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
            proc = subprocess.run(install, env=env, capture_output=True, text=True, timeout=1200)
            if proc.returncode != 0:
                return f"installing {' '.join(packages)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return None


def cross_objects(flags: list[str] | None = None) -> tuple[Path, list[Path]]:
    """The blocks and VQF compiled for the Cortex-M4F: (folder, objects). Each object's `.su`
    file (its functions' stack use) sits beside it."""
    reason = cross_tools_reason()
    if reason:
        raise BuildError(reason)
    vqf = vqf_sources()
    flags = DEVICE_FLAGS + (flags or [])
    sources = library_sources()
    key = _key(["arm-none-eabi-gcc", *flags], sources + library_headers() + vqf_files(vqf))
    folder = BUILD / f"cortex-m4f-{key}"
    objects = [folder / (source.name + ".o") for source in sources]
    if all(obj.exists() for obj in objects):
        return folder, objects
    with _locked():
        if not all(obj.exists() for obj in objects):
            with tempfile.TemporaryDirectory(dir=_build_root()) as scratch:
                for source in sources:
                    _compile("arm-none-eabi-gcc", "arm-none-eabi-g++", source,
                             Path(scratch) / (source.name + ".o"), flags, vqf)
                shutil.rmtree(folder, ignore_errors=True)
                shutil.copytree(scratch, folder)
    return folder, objects


def firmware(name: str = "fusion_harness", main: Path | None = None, extra_flags: list[str] | None = None,
             semihosting: bool = True, generated: dict[str, str] | None = None,
             library_flags: list[str] | None = None) -> Path:
    """An ELF for QEMU's mps2-an386 linking the blocks with `main` (default: the harness that
    runs windows read through semihosting). Without semihosting it links against no I/O at all,
    as a footprint probe. `generated`: header name -> text, written beside `main`'s build;
    `library_flags`: extra flags for the blocks' own compile (e.g. -DKALMAN_WITH_VQF=0)."""
    main = main or FIRMWARE / "harness.c"
    folder, objects = cross_objects(library_flags)
    support = [FIRMWARE / "system_mps2.c", main]
    if main.name == "harness.c":
        support.append(FIRMWARE / "harness_engine_direct.c")
    specs = "--specs=rdimon.specs" if semihosting else "--specs=nosys.specs"
    generated = generated or {}
    key = _key([specs, *(extra_flags or []), *(f"{k}={v}" for k, v in sorted(generated.items()))],
               [*support, *objects, *library_headers(), *sorted(FIRMWARE.glob("*.h"))])
    output = folder / f"{name}-{key}.elf"

    def make(scratch: Path) -> Path:
        for header, text in generated.items():
            (scratch / header).write_text(text)
        script = scratch / "mps2_an386.ld"
        script.write_text(_linker_script())
        startup = scratch / "startup.o"
        _run(["arm-none-eabi-gcc", *CORTEX_M4F, f"-D__STACK_SIZE={FIRMWARE_STACK_BYTES:#x}",
              f"-D__HEAP_SIZE={FIRMWARE_HEAP_BYTES if semihosting else 0:#x}", "-c",
              str(TOOLCHAIN_EXAMPLES / "startup" / "startup_ARMCM4.S"), "-o", str(startup)])
        support_objects = []
        for source in support:
            obj = scratch / (source.stem + ".o")
            _run(["arm-none-eabi-gcc", *DEVICE_FLAGS, *C_STANDARD, *C_WARNINGS, *(extra_flags or []),
                  f"-I{LIB}", f"-I{FIRMWARE}", f"-I{scratch}", "-c", str(source), "-o", str(obj)])
            support_objects.append(str(obj))
        elf = scratch / output.name
        _run(["arm-none-eabi-gcc", *CORTEX_M4F, specs, "-Wl,--gc-sections", f"-Wl,-Map={output}.map",
              "-T", str(script), str(startup), *support_objects, *map(str, objects), "-lm", "-o", str(elf)])
        return elf

    return _built_once(output, make)


def _linker_script() -> str:
    """The toolchain's example gcc.ld with mps2-an386's memory map in place of its MEMORY block."""
    text = (TOOLCHAIN_EXAMPLES / "ldscripts" / "gcc.ld").read_text()
    replaced, count = re.subn(r"MEMORY\s*\{[^}]*\}", MPS2_MEMORY, text, count=1)
    if count != 1:
        raise BuildError("the toolchain's example gcc.ld has no MEMORY block to replace")
    return replaced


# --- helpers ------------------------------------------------------------------------------------

def _built_once(output: Path, make) -> Path:
    """`output`, made by `make(scratch)` (which returns the file it wrote in the scratch folder)
    unless it exists; one process at a time builds, and the file appears whole or not at all."""
    if output.exists():
        return output
    with _locked():
        if not output.exists():
            with tempfile.TemporaryDirectory(dir=_build_root()) as scratch:
                made = make(Path(scratch))
                output.parent.mkdir(parents=True, exist_ok=True)
                os.replace(made, output)
    return output


def _shared_library(compile_source, sources: list[Path], linker: str, name: str):
    """A `make` for _built_once: every source compiled into the scratch folder, linked as `name`."""
    def make(scratch: Path) -> Path:
        objects = []
        for source in sources:
            obj = scratch / (source.name + ".o")
            compile_source(source, obj)
            objects.append(str(obj))
        library = scratch / name
        _run([linker, "-shared", "-o", str(library), *objects, "-lm"])
        return library
    return make


def _key(words: list[str], files: list[Path]) -> str:
    digest = hashlib.sha256("\0".join(words).encode())
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _build_root() -> Path:
    BUILD.mkdir(parents=True, exist_ok=True)
    return BUILD


@contextmanager
def _locked(name: str = "build"):
    with open(_build_root() / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str]) -> None:
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(command[:3])} ... failed:\n{proc.stdout}{proc.stderr}")


def main(argv: list[str]) -> int:
    targets = {"host": host_library, "firmware": firmware, "server": install_server_library}
    if len(argv) != 1 or argv[0] not in targets:
        print(f"usage: python -m device.build {{{','.join(targets)}}}", file=sys.stderr)
        return 2
    try:
        print(targets[argv[0]]())
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
