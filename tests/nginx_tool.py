"""nginx for the load-balancer test: Debian's package, installed as root when missing (the same
pattern as device.build.cross_tools_reason, under the same apt lock)."""
from __future__ import annotations

import os
import shutil
import subprocess

from device.build import _locked

PACKAGES = ("nginx",)
SBIN_PATH = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"


def nginx_path() -> str | None:
    return shutil.which("nginx", path=SBIN_PATH)


def nginx_reason() -> str | None:
    """None when nginx is there (installing it from Debian's packages as root if it is not), else why not."""
    if nginx_path():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"nginx is missing and cannot be installed here (needs root and apt-get): apt-get install {' '.join(PACKAGES)}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "PATH": SBIN_PATH}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    with _locked("apt"):
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            # A fresh machine may have no (or stale) package lists: refresh once and retry.
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
            proc = subprocess.run(install, env=env, capture_output=True, text=True, timeout=1200)
            if proc.returncode != 0:
                return f"installing {' '.join(PACKAGES)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return None if nginx_path() else "apt-get installed nginx but no nginx binary is on PATH"
