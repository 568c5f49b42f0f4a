"""The import graph goes one way (docs/architecture.md): this test fails on an import
against the layering, so a shortcut is a conscious change of the rules, not a habit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"daemon": "gossipchat.daemon", "rpc": "gossipchat.rpc",
            "clients": "gossipchat.clients"}
SERVICES = ("gossipchat.daemon.node", "gossipchat.daemon.sync", "gossipchat.daemon.images",
            "gossipchat.daemon.redial", "gossipchat.daemon.presence", "gossipchat.daemon.mdns",
            "gossipchat.daemon.service",
            "gossipchat.daemon.dht",
            "gossipchat.daemon.main",
            "gossipchat.daemon.history")
# What builds the node and hands it to the transports.
WIRING = ("gossipchat.daemon.node", "gossipchat.daemon.service", "gossipchat.daemon.main")
CLIENT_HALF = ("gossipchat.rpc.client", "gossipchat.rpc.jsonline", "gossipchat.rpc.paths",
               "gossipchat.rpc.table")
IO_LIBRARIES = ("trio", "libp2p", "multiaddr", "sqlite3", "socket", "anyio", "hypercorn",
                "starlette")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = [PACKAGES[rel.parts[0]], *rel.with_suffix("").parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module path imported by the file, relative imports resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # `from . import envelope` imports a module, not a name.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _files() -> list[Path]:
    return sorted(p for folder in PACKAGES for p in (ROOT / folder).rglob("*.py"))


def _hits(imports: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(i for i in imports
                  if any(i == p or i.startswith(p + ".") for p in prefixes))


def _violations(path: Path) -> list[str]:
    module = _module_name(path)
    imports = _imports(path)
    out: list[str] = []

    def forbid(prefixes: tuple[str, ...], rule: str) -> None:
        out.extend(f"{module} imports {hit}: {rule}" for hit in _hits(imports, prefixes))

    if module.startswith("gossipchat.daemon.core"):
        forbid(IO_LIBRARIES, "the core is sans-IO")
        forbid(("gossipchat.daemon.adapters", *SERVICES, "gossipchat.rpc",
                "gossipchat.clients"), "the core imports only the core and errors")
    if not module.startswith("gossipchat.daemon.adapters"):
        forbid(("libp2p",), "only adapters import libp2p")
    if module.startswith("gossipchat.daemon.adapters"):
        forbid((*SERVICES, "gossipchat.rpc", "gossipchat.clients"),
               "adapters do I/O for services; they never call them")
    if module.startswith("gossipchat.clients") or module in CLIENT_HALF:
        forbid(("trio", "libp2p", "multiaddr", "gossipchat.daemon"), "clients are thin")
        forbid(tuple(m for m in ("gossipchat.rpc.server", "gossipchat.rpc.session",
                                 "gossipchat.rpc.bindings", "gossipchat.rpc.dispatch",
                                 "gossipchat.rpc.limits")),
               "clients use the client half of rpc only")
    if module in SERVICES and module not in WIRING:
        forbid(("gossipchat.daemon.node",),
               "services take what they use and never reach back to the node")
    if module == "gossipchat.daemon.history":
        forbid(tuple(s for s in SERVICES if s != module),
               "history is below every other service; it tells them through hooks")
    if module.startswith("gossipchat.daemon") and not (
            module == "gossipchat.daemon.service" or module.startswith("gossipchat.daemon.web")):
        forbid(("gossipchat.rpc.server", "gossipchat.rpc.session", "gossipchat.rpc.bindings",
                "gossipchat.rpc.dispatch"),
               "the daemon serves RPC only where service.py wires the transports")
    return out


def test_every_module_keeps_to_its_layer() -> None:
    problems = [v for path in _files() for v in _violations(path)]
    assert problems == []


@pytest.mark.parametrize(("module_file", "source", "expected"), [
    ("daemon/core/x.py", "import trio\n", "the core is sans-IO"),
    ("daemon/core/x.py", "from ..adapters import store\n", "the core imports only"),
    ("daemon/core/x.py", "from .. import node\n", "the core imports only"),
    ("daemon/adapters/x.py", "from ..sync import SyncService\n", "adapters do I/O"),
    ("daemon/sync.py", "from libp2p.peer.id import ID\n", "only adapters import libp2p"),
    ("clients/x.py", "import trio\n", "clients are thin"),
    ("clients/x.py", "from gossipchat.rpc.session import RpcSession\n", "client half"),
    ("rpc/client.py", "from gossipchat.daemon.errors import NotFound\n", "clients are thin"),
    ("daemon/images.py", "from gossipchat.rpc.session import RpcSession\n", "wires"),
    ("daemon/sync.py", "from .node import Node\n", "never reach back to the node"),
    ("daemon/presence.py", "if 1:\n    from .node import Node\n", "never reach back"),
    ("daemon/history.py", "from .sync import SyncService\n", "history is below"),
])
def test_the_rules_catch_a_wrong_import(tmp_path: Path, module_file: str, source: str,
                                        expected: str, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    fake_root = tmp_path
    path = fake_root / module_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", fake_root)
    problems = _violations(path)
    assert any(expected in p for p in problems), problems
