"""Daemon configuration: defaults, then config.toml, then command-line flags.

Every key of the TOML file is a field of `Config` with the same name; deploy/config.toml
documents each one. Unknown keys and wrong types are errors that name the key, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from gossipchat.rpc.paths import default_home

from .core.envelope import EnvelopeError, check_nick
from .web.listen import DEFAULT_WEB_LISTEN, WebListenError, parse_web_listen

DEFAULT_LISTEN = ["/ip4/0.0.0.0/tcp/4001"]
LOG_LEVELS = ("debug", "info", "warning", "error")
DHT_MODES = ("auto", "server", "client", "off")
REACHABILITY_MODES = ("auto", "public", "private")


class ConfigError(Exception):
    """A config file or flag that cannot be used; the message names it."""


@dataclass(frozen=True)
class Config:
    """Everything the daemon can be told; see deploy/config.toml for each key."""

    home: Path = field(default_factory=default_home)
    listen: list[str] = field(default_factory=lambda: list(DEFAULT_LISTEN))
    bootstrap: list[str] = field(default_factory=list)
    rpc: Path | None = None
    log_level: str = "info"
    nick: str = ""
    durability: str = "normal"
    history_default_limit: int = 50
    history_max_limit: int = 10_000
    subscriber_buffer: int = 1024
    sync_interval_s: float = 10.0
    sync_depth: int = 10_000
    image_max_bytes: int = 25 * 1024 * 1024
    image_max_pixels: int = 64_000_000
    auto_fetch_max: int = 10 * 1024 * 1024
    block_quota: int = 2 * 1024 * 1024 * 1024
    fetch_timeout_s: float = 60.0
    max_concurrent_fetches: int = 8
    rpc_max_connections: int = 64
    rpc_max_subscriptions: int = 32
    rpc_max_line_bytes: int = 48 * 1024 * 1024
    rpc_max_batch: int = 1000
    rpc_max_response_bytes: int = 8 * 1024 * 1024
    presence_interval_s: float = 60.0
    room_peers_min: int = 4
    room_peers_max: int = 10
    max_connections: int = 200
    max_inbound_connections: int = 256
    max_inbound_per_ip: int = 32
    gossip_max_msgs_per_peer_s: float = 500.0
    gossip_burst_per_peer: int = 2000
    max_streams_per_connection: int = 256
    max_streams_per_protocol: int = 32
    stream_receive_window: int = 1024 * 1024
    max_wants_per_peer: int = 4096
    mdns: bool = True
    web_listen: str = DEFAULT_WEB_LISTEN
    dht: str = "auto"
    relay_service: bool = True
    relay_max_reservations: int = 128
    relay_max_circuits: int = 256
    relay_max_circuits_per_peer: int = 16
    relay_reservation_ttl_s: float = 3600.0
    relay_circuit_duration_s: float = 3600.0
    relay_circuit_bytes: int = 64 * 1024 * 1024
    relay_reservations: int = 2
    reachability: str = "auto"
    hole_punching: bool = True

    @property
    def rpc_path(self) -> Path:
        """The socket path: the rpc key, else <home>/rpc.sock."""
        return self.rpc if self.rpc is not None else self.home / "rpc.sock"

    @property
    def listen_is_default(self) -> bool:
        """True when nobody chose the listen addresses (port fallback allowed)."""
        return self.listen == DEFAULT_LISTEN

    @property
    def web_listen_is_default(self) -> bool:
        """True when nobody chose the web UI's address (port fallback allowed)."""
        return self.web_listen == DEFAULT_WEB_LISTEN


_PATH_KEYS = {"home", "rpc"}
_LIST_KEYS = {"listen", "bootstrap"}


def _coerce(key: str, value: Any, expected: type | None) -> Any:
    if key in _PATH_KEYS:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"config key {key!r} must be a non-empty path string")
        return Path(value).expanduser()
    if key in _LIST_KEYS:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config key {key!r} must be a list of multiaddr strings")
        return list(value)
    if expected is float and type(value) is int:
        value = float(value)
    if expected is not None and (type(value) is not expected):
        raise ConfigError(
            f"config key {key!r} must be {expected.__name__}, not {type(value).__name__}"
        )
    return value


def _validate(config: Config) -> Config:
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
    if config.durability not in ("normal", "full"):
        raise ConfigError("durability must be 'normal' or 'full'")
    for key in ("history_default_limit", "history_max_limit", "subscriber_buffer",
                "sync_depth"):
        if getattr(config, key) < 1:
            raise ConfigError(f"config key {key!r} must be at least 1")
    for key in ("image_max_bytes", "image_max_pixels", "block_quota",
                "rpc_max_connections", "rpc_max_subscriptions", "rpc_max_batch"):
        if getattr(config, key) < 1:
            raise ConfigError(f"config key {key!r} must be at least 1")
    for key in ("rpc_max_line_bytes", "rpc_max_response_bytes"):
        if getattr(config, key) < 64 * 1024:
            raise ConfigError(f"config key {key!r} must be at least 65536 bytes")
    if config.auto_fetch_max < 0:
        raise ConfigError("config key 'auto_fetch_max' must be 0 (off) or more")
    if not 0 < config.fetch_timeout_s <= 3600:
        raise ConfigError("config key 'fetch_timeout_s' must be in (0, 3600]")
    if config.sync_interval_s < 1:
        raise ConfigError("config key 'sync_interval_s' must be at least 1 second")
    if not 1 <= config.presence_interval_s <= 86400:
        raise ConfigError("config key 'presence_interval_s' must be in [1, 86400]")
    if config.room_peers_min < 1:
        raise ConfigError("config key 'room_peers_min' must be at least 1")
    if config.room_peers_max < config.room_peers_min:
        raise ConfigError("config key 'room_peers_max' must be at least room_peers_min")
    if config.max_connections < config.room_peers_max:
        raise ConfigError("config key 'max_connections' must be at least room_peers_max")
    if config.max_inbound_connections < config.max_connections:
        # The manager trims down to max_connections after a grace period; refusing
        # inbound connections below it would refuse peers the manager wants to keep.
        raise ConfigError("config key 'max_inbound_connections' must be at least "
                          "max_connections")
    if not 1 <= config.max_inbound_per_ip <= config.max_inbound_connections:
        raise ConfigError("config key 'max_inbound_per_ip' must be in "
                          "[1, max_inbound_connections]")
    if not 10 <= config.gossip_max_msgs_per_peer_s <= 1_000_000:
        raise ConfigError("config key 'gossip_max_msgs_per_peer_s' must be in "
                          "[10, 1000000] messages a second")
    if config.gossip_burst_per_peer < config.gossip_max_msgs_per_peer_s:
        raise ConfigError("config key 'gossip_burst_per_peer' must be at least "
                          "gossip_max_msgs_per_peer_s (one second's worth)")
    if not 16 <= config.max_streams_per_connection <= 4096:
        # Below 16 the daemon's own protocols (pubsub, identify, sync, presence,
        # bitswap, kad) could not all run on one connection at once.
        raise ConfigError("config key 'max_streams_per_connection' must be in [16, 4096]")
    if not 1 <= config.max_streams_per_protocol <= config.max_streams_per_connection:
        raise ConfigError("config key 'max_streams_per_protocol' must be in "
                          "[1, max_streams_per_connection]")
    if not 256 * 1024 <= config.stream_receive_window <= 16 * 1024 * 1024:
        # Below 256 KiB breaks yamux (the spec's initial window); above 16 MiB one
        # stream could make us hold more than a whole image.
        raise ConfigError("config key 'stream_receive_window' must be in "
                          "[262144, 16777216] bytes")
    if not 64 <= config.max_wants_per_peer <= 32768:
        raise ConfigError("config key 'max_wants_per_peer' must be in [64, 32768]")
    if not 1 <= config.max_concurrent_fetches <= 1024:
        raise ConfigError("config key 'max_concurrent_fetches' must be in [1, 1024]")
    if config.dht not in DHT_MODES:
        raise ConfigError(f"config key 'dht' must be one of {', '.join(DHT_MODES)}")
    for key in ("relay_max_reservations", "relay_max_circuits", "relay_max_circuits_per_peer"):
        if getattr(config, key) < 1:
            raise ConfigError(f"config key {key!r} must be at least 1")
    if config.reachability not in REACHABILITY_MODES:
        raise ConfigError("config key 'reachability' must be one of "
                          f"{', '.join(REACHABILITY_MODES)}")
    if not 0 <= config.relay_reservations <= 16:
        raise ConfigError("config key 'relay_reservations' must be in [0, 16]")
    for key in ("relay_reservation_ttl_s", "relay_circuit_duration_s"):
        if not 60 <= getattr(config, key) <= 86400:
            raise ConfigError(f"config key {key!r} must be in [60, 86400] seconds")
    if config.relay_circuit_bytes < 64 * 1024:
        raise ConfigError("config key 'relay_circuit_bytes' must be at least 65536 bytes")
    if not config.listen:
        raise ConfigError("at least one listen address is needed")
    if config.nick:
        try:
            check_nick(config.nick)
        except EnvelopeError as exc:
            raise ConfigError(f"config key 'nick': {exc.detail}") from None
    try:
        parse_web_listen(config.web_listen)
    except WebListenError as exc:
        raise ConfigError(str(exc)) from None
    return config


def load(path: Path | None, overrides: dict[str, Any]) -> Config:
    """Defaults, then the TOML file (if any), then the non-None overrides."""
    base = Config(home=overrides["home"]) if overrides.get("home") else Config()
    values: dict[str, Any] = {}
    config_path = path if path is not None else base.home / "config.toml"
    if path is not None or config_path.exists():
        try:
            with open(config_path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {config_path} does not exist") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {config_path}: {exc}") from None
        types = {f.name: f.type for f in fields(Config)}
        simple = {"str": str, "int": int, "bool": bool, "float": float}
        for key, value in data.items():
            if key not in types:
                raise ConfigError(f"config file {config_path}: unknown key {key!r}")
            values[key] = _coerce(key, value, simple.get(str(types[key])))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return _validate(replace(base, **values))
