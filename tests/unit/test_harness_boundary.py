"""harness/ is for development only: the wheel leaves it out, and no shipped module
imports it (or tests/, or bench/), so a user's install never needs it."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("daemon", "rpc", "clients")
DEV_ONLY = ("harness", "tests", "bench")


def test_the_wheel_ships_gossipchat_packages_only() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert all(p.startswith("gossipchat.") for p in setuptools["packages"])
    assert set(setuptools["package-dir"].values()) == set(SHIPPED)


def test_no_shipped_module_imports_the_dev_only_packages() -> None:
    found = []
    for folder in SHIPPED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom)
                         and not node.level else [])
                found += [f"{path.relative_to(ROOT)}: {name}" for name in names
                          if name.split(".")[0] in DEV_ONLY]
    assert found == []
