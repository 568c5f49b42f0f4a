"""Config loading: defaults, file, flags, and the documented example."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from gossipchat.daemon.config import Config, ConfigError, load

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "config.toml"


def test_example_config_documents_every_key_and_loads(tmp_path: Path) -> None:
    documented = set(tomllib.loads(EXAMPLE.read_text()))
    text = EXAMPLE.read_text()
    for f in fields(Config):
        if f.name in ("home",):
            continue
        assert f.name in documented or f"# {f.name} =" in text, f"{f.name} undocumented"
    config = load(EXAMPLE, {"home": tmp_path})
    assert config.listen == ["/ip4/0.0.0.0/tcp/4001"]


def test_flags_override_file_override_defaults(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('nick = "file"\nlog_level = "debug"\n')
    config = load(None, {"home": tmp_path, "log_level": "error"})
    assert config.nick == "file"
    assert config.log_level == "error"
    assert config.rpc_path == tmp_path / "rpc.sock"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope = 1", "unknown key 'nope'"),
        ('listen = "x"', "list of multiaddr"),
        ('history_max_limit = "many"', "must be int"),
        ('log_level = "loud"', "log_level"),
        ('durability = "maybe"', "durability"),
        ("subscriber_buffer = 0", "at least 1"),
        ("= broken", "config file"),
        ('nick = "al\\u202eice"', "nick.*bidi"),
        ('nick = " padded"', "nick.*whitespace"),
        ('reachability = "maybe"', "reachability.*auto, public, private"),
        ("max_inbound_connections = 100", "max_inbound_connections.*max_connections"),
        ("max_inbound_per_ip = 0", "max_inbound_per_ip"),
        ("max_inbound_per_ip = 300", "max_inbound_per_ip.*max_inbound_connections"),
        ('max_inbound_per_ip = "8"', "must be int"),
        ("gossip_max_msgs_per_peer_s = 5", "gossip_max_msgs_per_peer_s"),
        ("gossip_max_msgs_per_peer_s = 600.0\ngossip_burst_per_peer = 500",
         "gossip_burst_per_peer.*at least"),
        ("max_concurrent_fetches = 0", "max_concurrent_fetches"),
        ("max_streams_per_connection = 8", "max_streams_per_connection.*16, 4096"),
        ("max_streams_per_protocol = 0", "max_streams_per_protocol"),
        ("max_wants_per_peer = 10", "max_wants_per_peer.*64, 32768"),
        ("stream_receive_window = 65536", "stream_receive_window.*262144"),
        ("max_streams_per_connection = 64\nmax_streams_per_protocol = 65",
         "max_streams_per_protocol.*max_streams_per_connection"),
        ("max_concurrent_fetches = 2000", "max_concurrent_fetches"),
        ('hole_punching = "yes"', "hole_punching.*must be bool"),
        ("hole_punching = 1", "hole_punching.*must be bool"),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load(path, {"home": tmp_path})


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.toml", {"home": tmp_path})


def test_reachability_defaults_to_auto_and_takes_public_or_private(tmp_path: Path) -> None:
    assert load(None, {"home": tmp_path}).reachability == "auto"
    (tmp_path / "config.toml").write_text('reachability = "private"\n')
    assert load(None, {"home": tmp_path}).reachability == "private"


def test_hole_punching_defaults_to_on_and_turns_off(tmp_path: Path) -> None:
    assert load(None, {"home": tmp_path}).hole_punching is True
    (tmp_path / "config.toml").write_text("hole_punching = false\n")
    assert load(None, {"home": tmp_path}).hole_punching is False
