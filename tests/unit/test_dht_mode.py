"""The `dht` config key and flag, and what `auto` means."""

from __future__ import annotations

from pathlib import Path

import pytest

from gossipchat.daemon.config import ConfigError, load
from gossipchat.daemon.dht import resolve_mode
from gossipchat.daemon.main import _parser


def test_the_key_takes_the_four_modes_and_refuses_others(tmp_path: Path) -> None:
    for mode in ("auto", "server", "client", "off"):
        (tmp_path / "config.toml").write_text(f'dht = "{mode}"\n')
        assert load(None, {"home": tmp_path}).dht == mode
    (tmp_path / "config.toml").write_text('dht = "sometimes"\n')
    with pytest.raises(ConfigError, match="dht"):
        load(None, {"home": tmp_path})


def test_the_flag_overrides_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('dht = "off"\n')
    args = _parser().parse_args(["--dht", "client"])
    assert load(None, {"home": tmp_path, "dht": args.dht}).dht == "client"
    assert load(None, {"home": tmp_path}).dht == "off"


def test_auto_is_a_server_unless_known_unreachable() -> None:
    assert resolve_mode("auto", "unknown") == "server"
    assert resolve_mode("auto", "public") == "server"
    assert resolve_mode("auto", "private") == "client"
    assert resolve_mode("client", "public") == "client"
