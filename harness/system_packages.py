"""System packages that tests need (tmux, chromium …), installed with apt-get on demand.

Tests call `ensure_apt("tmux")` and skip with the reason it returns, if any. An
exclusive file lock serialises the installs of parallel test processes, so apt-get
never runs twice at once, and `apt-get update` runs at most once per machine boot
(a stamp file in /tmp remembers it).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

LOCK_PATH = Path("/tmp/gossipchat-tests-apt.lock")
UPDATED_STAMP = Path("/tmp/gossipchat-tests-apt.updated")
APT_TIMEOUT_S = 900


def _installed(package: str) -> bool:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                          capture_output=True, text=True, check=False)
    return done.returncode == 0 and "install ok installed" in done.stdout


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", *args], capture_output=True, text=True, timeout=APT_TIMEOUT_S,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, check=False)


def _update() -> str | None:
    update = _apt("update")
    if update.returncode != 0:
        return f"apt-get update failed: {update.stderr.strip()[-300:]}"
    UPDATED_STAMP.touch()
    return None


def ensure_apt(*packages: str) -> str | None:
    """Install the Debian packages that are missing; a skip reason, or None when all are in."""
    if shutil.which("dpkg-query") is None or shutil.which("apt-get") is None:
        return f"needs {', '.join(packages)}, and this system has no apt-get to install them"
    with LOCK_PATH.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = [p for p in packages if not _installed(p)]
        if not missing:
            return None
        if os.geteuid() != 0:
            return (f"needs {', '.join(missing)}: install with 'apt-get install -y "
                    f"{' '.join(missing)}' (apt-get needs root, these tests do not run as root)")
        updated_now = False
        if not UPDATED_STAMP.exists():
            reason = _update()
            if reason:
                return reason
            updated_now = True
        install = _apt("install", "-y", "--no-install-recommends", *missing)
        if install.returncode != 0 and not updated_now:
            # Package lists from an earlier run may point at files the mirror dropped.
            reason = _update()
            if reason:
                return reason
            install = _apt("install", "-y", "--no-install-recommends", *missing)
        if install.returncode != 0:
            return (f"apt-get install {' '.join(missing)} failed: "
                    f"{install.stderr.strip()[-300:]}")
        still = [p for p in missing if not _installed(p)]
        if still:
            return f"apt-get ran, but {', '.join(still)} is still not installed"
    return None
