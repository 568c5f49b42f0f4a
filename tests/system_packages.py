"""Debian packages that some tests need (a browser, a shell), installed by the tests.

CI runs on a clean machine, so what a test needs beyond Python must be installed by
the project itself. `ensure_apt` installs missing packages with apt-get as root,
runs `apt-get update` once (again only if an install then fails), and takes a
file lock so that tests running in parallel never run apt twice at once.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

LOCK_PATH = Path("/tmp/gossipchat-apt.lock")
UPDATED_MARK = Path("/tmp/gossipchat-apt.updated")
APT_TIMEOUT_S = 900


def _installed(package: str) -> bool:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package],
        capture_output=True, text=True, check=False)
    # "install ok installed"; not "unknown ok not-installed" nor "deinstall ok config-files".
    return done.returncode == 0 and done.stdout.split() == ["install", "ok", "installed"]


def _install(packages: list[str], env: dict[str, str], *, update: bool) -> str | None:
    """apt-get install (after apt-get update if asked); an error text, or None."""
    if update:
        done = subprocess.run(["apt-get", "update"], capture_output=True, text=True,
                              env=env, timeout=APT_TIMEOUT_S, check=False)
        if done.returncode != 0:
            return f"apt-get update failed: {done.stderr.strip()[-500:]}"
        UPDATED_MARK.touch()
    done = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", *packages],
        capture_output=True, text=True, env=env, timeout=APT_TIMEOUT_S, check=False)
    if done.returncode != 0:
        return f"apt-get install {' '.join(packages)} failed: {done.stderr.strip()[-500:]}"
    return None


def ensure_apt(*packages: str) -> str | None:
    """Install the Debian packages that are missing; a skip reason, or None when present."""
    if shutil.which("dpkg-query") is None or shutil.which("apt-get") is None:
        return "not a Debian system: apt-get is missing"
    missing = [p for p in packages if not _installed(p)]
    if not missing:
        return None
    if os.geteuid() != 0:
        return f"missing Debian packages {missing} and not root to install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(LOCK_PATH, "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            missing = [p for p in packages if not _installed(p)]  # another test may have
            if not missing:
                return None
            failure = _install(missing, env, update=not UPDATED_MARK.exists())
            if failure is not None and UPDATED_MARK.exists():
                # Package lists from an earlier run may be stale: update, then retry once.
                failure = _install(missing, env, update=True)
            if failure is not None:
                return failure
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    still = [p for p in packages if not _installed(p)]
    return f"packages still missing after apt-get: {still}" if still else None
