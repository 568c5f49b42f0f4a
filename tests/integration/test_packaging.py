"""The package as users install it: a wheel, not the editable checkout.

`make venv` installs the project editable, which finds every module by path, so a
package missing from pyproject.toml's list goes unseen there and breaks every
`pip install .` (daemon/core/gossipsub and three others were missing until 2026-12-04).
This builds the wheel, checks it holds every module of the checkout, and runs a real
gossipchatd from it, with the editable install out of sight.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import pytest

from harness.daemons import DaemonProcess

REPO = Path(__file__).resolve().parents[2]
# The top-level folders and the package each becomes (pyproject's package-dir).
PACKAGES = {"daemon": "gossipchat/daemon", "rpc": "gossipchat/rpc",
            "clients": "gossipchat/clients"}


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # From a copy of the sources alone: setuptools reuses a checkout's build/ folder,
    # and a stale one would fill in what pyproject.toml leaves out.
    source = out / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in PACKAGES:
        shutil.copytree(REPO / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out),
         str(source)],
        capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = out.glob("gossipchat-*.whl")
    unpacked = out / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    return unpacked


def _checkout_files() -> set[str]:
    files = set()
    for folder, package in PACKAGES.items():
        for path in (REPO / folder).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix in {".py", ".html", ".js", ".css"} or path.name == "py.typed":
                files.add(f"{package}/{path.relative_to(REPO / folder).as_posix()}")
    return files


def test_the_wheel_holds_every_module_and_static_file(wheel_dir: Path) -> None:
    held = {p.relative_to(wheel_dir).as_posix() for p in wheel_dir.rglob("*") if p.is_file()}
    missing = sorted(_checkout_files() - held)
    assert not missing, f"pyproject.toml leaves these out of the wheel: {missing[:20]}"


def test_a_daemon_runs_from_the_wheel(wheel_dir: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # python -S skips site-packages' .pth files, the editable install's hook among
    # them; PYTHONPATH puts the wheel first and keeps the dependencies reachable.
    monkeypatch.setenv("PYTHONPATH", f"{wheel_dir}:{sysconfig.get_paths()['purelib']}")
    where = subprocess.run(
        [sys.executable, "-S", "-c",
         "import gossipchat.daemon.core.gossipsub.router as m; print(m.__file__)"],
        capture_output=True, text=True, timeout=60, check=False)
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(wheel_dir)), where.stdout

    daemon = DaemonProcess("wheel", tmp_path / "home", prefix_argv=[sys.executable, "-S"])
    daemon.start()
    try:
        status = daemon.call("status")
        assert status["peer_id"] == daemon.peer_id
        daemon.call("join", room="packaged")
        sent = daemon.call("send", room="packaged", text="from a wheel")
        assert sent["id"]
        # The web UI's page comes from the package's data files.
        request = urllib.request.Request(
            urllib.parse.urljoin(daemon.web_url, "/"),
            headers={"Authorization": f"Bearer {daemon.web_token}"})
        with urllib.request.urlopen(request, timeout=10) as page:
            assert b"gossipchat" in page.read()
    finally:
        daemon.stop()
