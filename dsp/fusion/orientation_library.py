"""Finds and loads the orientation filters' C library (float64) and sets its ctypes signatures.

The complementary, Madgwick, Mahony and EKF recursions run in the C code the device runs
(`device/lib/orientation_filters.c`), compiled in float64 with its server entry point
(`device/server/orientation_server.c`) by `make install` (`python -m device.build server`). The
library's path is env `DSP_ORIENTATION_LIBRARY`, else `build/server/liborientation_f64.so` in the
repository (in the image: /app/build/server/).
"""
from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

__all__ = ["ENV", "DEFAULT_PATH", "SETTINGS", "LibraryError", "library", "path"]

ENV = "DSP_ORIENTATION_LIBRARY"
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "build" / "server" / "liborientation_f64.so"
# The order of orientation_server_run's settings array (device/server/orientation_server.c).
SETTINGS = ("tau", "tau_mag", "alpha", "alpha_mag", "beta", "kp", "ki", "bias_max_rate", "gyro_noise",
            "bias_walk", "bias_init", "acc_noise", "acc_inflation", "rate_inflation", "innovation_inflation",
            "acc_gate", "mag_noise", "mag_norm_tol", "mag_dip_tol", "mag_ref_tau")


class LibraryError(RuntimeError):
    """The library is missing, cannot be loaded, or is not the one this code expects."""


def path() -> Path:
    return Path(os.environ.get(ENV) or DEFAULT_PATH)


@functools.cache
def library() -> ctypes.CDLL:
    """The loaded library (once per process); LibraryError with a one-line reason otherwise."""
    where = path()
    build = "build it with `make install` (or `python -m device.build server`)"
    if not where.is_file():
        raise LibraryError(f"The orientation filters' C library is missing at {where}: {build}, "
                           f"or set {ENV} to its path.")
    try:
        lib = ctypes.CDLL(str(where))
        count = lib.orientation_server_settings_count
        run = lib.orientation_server_run
        innovation = lib.orientation_server_innovation
    except (OSError, AttributeError) as exc:
        reason = str(exc).replace("\n", " ")
        raise LibraryError(f"The orientation filters' C library at {where} cannot be loaded ({reason}): "
                           f"{build}.") from None
    count.argtypes, count.restype = [], ctypes.c_size_t
    if count() != len(SETTINGS):
        raise LibraryError(f"The orientation filters' C library at {where} is out of date (it takes {count()} "
                           f"settings, this server {len(SETTINGS)}): {build}.")
    # Arrays go as addresses (c_void_p) of contiguous float64 numpy arrays, None for NULL.
    pointer = ctypes.c_void_p
    run.argtypes = [ctypes.c_char_p, pointer, ctypes.c_double, pointer, pointer, pointer, pointer, ctypes.c_size_t,
                    pointer, pointer, pointer, pointer, pointer, pointer]
    run.restype = ctypes.c_int
    innovation.argtypes = [ctypes.c_double, pointer, pointer, ctypes.c_size_t, pointer, pointer, pointer, pointer,
                           pointer]
    innovation.restype = None
    return lib
