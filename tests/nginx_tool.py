"""nginx for the load-balancer test: Debian's package, installed as root when missing (with
device.build.apt_install, as the cross tools are)."""
from __future__ import annotations

import os
import shutil

from device.build import apt_install

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
    reason = apt_install(PACKAGES, path=SBIN_PATH)
    if reason:
        return reason
    return None if nginx_path() else "apt-get installed nginx but no nginx binary is on PATH"
