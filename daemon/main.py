"""gossipchatd: the daemon's entry point.

Start-up order: parse flags and config, make the home (0700), take the home's lock,
load the identity, open the store, bind the RPC socket, start the node, and only then
print the ready line (and READY=1 under systemd). SIGTERM, SIGINT or the `shutdown`
method stop it cleanly: services are cancelled, the store is closed after its last
commit, the socket is removed, and the exit code is 0, all within the stop deadline
(`STOP_DEADLINE_S` in daemon/stopwatch.py). Once that is done the process ends at once,
without tearing down the interpreter's modules (which takes seconds of CPU with
py-libp2p loaded and could only lose time).
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from . import __version__
from .config import DHT_MODES, LOG_LEVELS, Config, ConfigError, load

log = logging.getLogger("gossipchat")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gossipchatd", description="The gossipchat daemon.")
    p.add_argument("--home", metavar="DIR", help="state directory (identity, store, socket)")
    p.add_argument("--listen", metavar="MULTIADDR", action="append",
                   help="listen address (repeatable); default /ip4/0.0.0.0/tcp/4001")
    p.add_argument("--bootstrap", metavar="MULTIADDR", action="append",
                   help="peer to dial at start, with /p2p/<peer id> (repeatable)")
    p.add_argument("--rpc", metavar="PATH", help="RPC unix socket; default <home>/rpc.sock")
    p.add_argument("--config", metavar="FILE", help="TOML config; default <home>/config.toml")
    p.add_argument("--log-level", choices=LOG_LEVELS, help="default info")
    p.add_argument("--web-listen", metavar="HOST:PORT",
                   help="the local web UI (loopback only); default 127.0.0.1:4180, "
                        "'off' disables it")
    p.add_argument("--no-mdns", dest="mdns", action="store_false", default=None,
                   help="do not announce or discover peers on the LAN (config mdns = false)")
    p.add_argument("--dht", choices=DHT_MODES,
                   help="Kademlia DHT mode for room rendezvous; default auto (a server "
                        "unless known unreachable)")
    p.add_argument("--version", action="version", version=f"gossipchatd {__version__}")
    return p


def _setup_logging(level: str) -> None:
    # journald stamps time and unit itself; a terminal or a file wants the time.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr)
    if level != "debug":
        # py-libp2p logs routine connection churn at INFO and WARNING.
        logging.getLogger("libp2p").setLevel(logging.ERROR)
        # And a stream it could not open (its only ERROR) as a seven-line report, for
        # what is routine too: a peer that hangs up while a stream is negotiated. The
        # adapter raises StreamClosedError and the service that asked logs one line.
        logging.getLogger("libp2p.host.basic_host").setLevel(logging.CRITICAL)


class HomeLocked(Exception):
    """Another daemon holds the home's lock."""


def lock_home(home: Path) -> IO[str]:
    """Take an exclusive lock on <home>/lock for the life of the process."""
    # Held open (and locked) for the life of the process, so no `with` here.
    lock = open(home / "lock", "a+")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        pid = lock.read().strip() or "unknown"
        lock.close()
        raise HomeLocked(
            f"another gossipchatd (pid {pid}) is already running with home {home}"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _prepare_home(home: Path) -> None:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    if home.stat().st_mode & 0o077:
        os.chmod(home, 0o700)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the gossipchatd executable."""
    args = _parser().parse_args(argv)
    overrides = {
        "home": Path(args.home).expanduser() if args.home else None,
        "listen": args.listen,
        "bootstrap": args.bootstrap,
        "rpc": Path(args.rpc).expanduser() if args.rpc else None,
        "log_level": args.log_level,
        "web_listen": args.web_listen,
        "mdns": args.mdns,
        "dht": args.dht,
    }
    try:
        config = load(Path(args.config) if args.config else None, overrides)
    except ConfigError as exc:
        print(f"gossipchatd: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    _setup_logging(config.log_level)
    code = run(config)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(config: Config) -> int:
    """Run the daemon with a resolved config; returns the exit code."""
    try:
        _prepare_home(config.home)
        lock = lock_home(config.home)
    except (OSError, HomeLocked) as exc:
        print(f"gossipchatd: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        import trio

        from .service import Daemon, StartupError

        try:
            daemon = Daemon(config)
        except StartupError as exc:
            print(f"gossipchatd: {exc}", file=sys.stderr)
            return exc.exit_code
        trio.run(daemon.serve, restrict_keyboard_interrupt_to_checkpoints=True)
        return EXIT_OK if daemon.clean_exit else EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        lock.close()
