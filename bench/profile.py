"""Where a daemon's CPU goes, scenario by scenario: py-spy on real gossipchatd processes.

    .venv/bin/python -m bench.profile                      # every scenario, ~6 minutes
    .venv/bin/python -m bench.profile --only burst,rpc --out /tmp/p

Each scenario starts its own daemons (as bench/ does), attaches `py-spy record` to one
or two of them for the part that matters, and writes what the samples say to
`<out>/profiles.md` (default bench/results/):
- the share of busy samples per layer, by the file of the innermost frame (the layers
  are `LAYERS` below: signatures, Noise, yamux, the trio loop and sockets, the router,
  the store, ...);
- the functions with most samples of their own, and the project's functions with the
  most samples under them.

Samples in epoll and in idle threads' waits are not busy and are left out. A profiled
daemon runs slower (py-spy pauses it for each sample), so the figures of these runs
are not the bench's: only the shares are. Needs py-spy (the `bench` extra).

py-spy counts a thread as busy when the kernel says it may run, also while it waits
for a core. On this 2-core machine, with 10 or 20 daemons, that is much of the time, and
such samples land where a process lost its core: most often a `send` that woke the
daemon at the other end (in a 20-daemon join, 31% of one member's samples were in
yamux's socket send). So each scenario is also sampled with `perf record -e cpu-clock`
(time on a CPU only) over all its daemons, and profiles.md gets the split of that CPU
time by library: the Python interpreter (our code and every pure-Python library),
libsodium (Ed25519), the kernel, libc, SQLite, the ChaCha20 of Noise and so on. It
names no Python function (Python 3.11 gives perf no frames), but it is the honest
share of each. Needs `perf` (Debian: `apt-get install linux-perf`); without it that
table says so and the rest is written as before.

The scenarios, each smaller than bench.run's so that the whole takes minutes:
- burst: 10 daemons, 1,000 messages from 3 senders; a sender and a forwarder.
- idle: the same 10 daemons for 30 s once the burst has settled; one member.
- propagation: 20 daemons, 20 messages a second from rotating senders for 15 s; a member.
- fetch: one daemon posts five 10 MB images, the other fetches each; both.
- fanout: 20 daemons, a 5 MB image to all; the poster and a member.
- rpc: `status` then `blocked`, one at a time on one connection for 4 s each.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from gossipchat.clients.library import Client
from gossipchat.rpc.client import RpcError
from harness import procs
from harness.daemons import BIN, DaemonProcess
from harness.waiting import wait_for

from . import burst, fanout, rpc_calls
from .daemons import Cluster, sparse_topology, wait_quiet
from .run import RESULTS, git_commit

RATE_HZ = 250
SEED = 20240603
FETCH_IMAGES = 5

# (layer, pattern on the file of the innermost frame), first match wins. py-spy names a
# frame `function (path)`, the path relative to its site-packages or checkout.
LAYERS: tuple[tuple[str, str], ...] = (
    ("Ed25519 signatures", r"^nacl/|ed25519|identity\.py$|core/gossipsub/signing\.py$"),
    ("Noise (ChaCha20-Poly1305)", r"^noise/|security/noise/"),
    ("socket syscalls", r"^trio/_socket\.py$|^trio/_highlevel_socket\.py$"),
    ("worker threads (disk, thumbnails)", r"^trio/_core/_thread_cache\.py$|^trio/_threads"),
    ("trio scheduling", r"^trio/|^outcome/|^contextlib\.py$|^sniffio/|<attrs generated"),
    ("yamux and streams", r"adapters/yamux\.py$|^libp2p/stream_muxer/|^libp2p/network/|"
                          r"^libp2p/io/|^libp2p/protocol_muxer/"),
    ("gossipsub router", r"core/gossipsub/|adapters/pubsub\.py$|core/protobuf\.py$"),
    ("envelopes, CBOR, varints", r"core/envelope\.py$|plaincbor|^cbor2/|core/varint\.py$|"
                                 r"^varint\.py$"),
    ("history and node", r"daemon/history\.py$|daemon/node\.py$|daemon/service\.py$"),
    ("store (SQLite, block files)", r"adapters/store\.py$|^sqlite3/|adapters/blockstore\.py$"),
    ("history sync", r"daemon/sync\.py$|core/reconcile\.py$|core/syncwire\.py$"),
    ("bitswap and images", r"bitswap|core/unixfs/|core/imaging/|daemon/images\.py$|"
                           r"adapters/exchange\.py$|^hashlib|^PIL/"),
    ("presence, DHT, discovery", r"presence\.py$|daemon/dht\.py$|core/kad|daemon/mdns\.py$|"
                                 r"adapters/kadaddrs\.py$|core/connmgr\.py$|^netaddr/"),
    ("RPC and JSON", r"^rpc/|^json/"),
    ("py-libp2p, multiaddr, base58", r"^libp2p/|^multiaddr/|^base58/"),
)
# Leaves that are waits, not work. trio's cached worker threads wait for their next job
# in a lock's acquire, a C call that py-spy does not show, so the waiting thread's leaf
# is its loop, `WorkerThread._work` (a thread running a job has that job's frames below
# it); py-spy counted those waits as busy, up to 84% of an idle member's samples.
IDLE_LEAVES = re.compile(r"epoll|select \(|Condition\.wait|_wait \(threading|poll \(|"
                         r"^WorkerThread\._work \(trio/")

PERF_HZ = 1000
# (library, pattern on the shared object perf names), first match wins.
LIBRARIES: tuple[tuple[str, str], ...] = (
    ("Python interpreter (our code, pure-Python libraries)", r"^libpython|^python3"),
    ("libsodium (Ed25519)", r"^_sodium"),
    ("kernel (syscalls, loopback TCP, scheduling, page faults)", r"^\[kernel|^\[vdso"),
    ("libc (memcpy, malloc)", r"^libc\.so|^libm\.so|^ld-linux"),
    ("SQLite", r"sqlite3"),
    ("cryptography (Noise's ChaCha20-Poly1305)", r"^_rust\.abi3"),
    ("OpenSSL (hashlib's sha-256)", r"^libcrypto|^_hashlib"),
    ("cbor2", r"^_cbor2"),
    ("orjson", r"^orjson"),
    ("Pillow, zlib (posting images)", r"^_imaging|^_webp|^libjpeg|^libpng|^libwebp|^libz\.|"
                                      r"^libtiff|^libopenjp"),
)


@dataclass
class Profile:
    """The collapsed samples of one daemon in one scenario."""

    title: str
    busy: int = 0
    wall_s: float = 0.0
    self_counts: collections.Counter[str] = field(default_factory=collections.Counter)
    incl_counts: collections.Counter[str] = field(default_factory=collections.Counter)
    layers: collections.Counter[str] = field(default_factory=collections.Counter)

    @classmethod
    def read(cls, title: str, path: Path, wall_s: float) -> Profile:
        """Summarize py-spy's raw (collapsed stack) output."""
        prof = cls(title, wall_s=wall_s)
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
            if IDLE_LEAVES.search(frames[-1]):
                continue
            n = int(count)
            prof.busy += n
            prof.self_counts[frames[-1]] += n
            prof.layers[layer_of(frames[-1])] += n
            for frame in set(frames):
                prof.incl_counts[frame] += n
        return prof

    def markdown(self, top: int = 12) -> str:
        """One section of profiles.md."""
        if not self.busy:
            return f"### {self.title}\n\nno busy samples\n"
        cpu = self.busy / RATE_HZ
        out = [f"### {self.title}\n",
               f"{self.busy} busy samples at {RATE_HZ} Hz: {cpu:.1f} s of CPU in "
               f"{self.wall_s:.0f} s ({100 * cpu / max(self.wall_s, 1e-9):.0f}% of a core, "
               "profiled)\n",
               "| layer (innermost frame) | share |", "| --- | ---: |"]
        for layer, n in self.layers.most_common():
            out.append(f"| {layer} | {100 * n / self.busy:.1f}% |")
        out += ["", "Most samples of their own:", ""]
        out += [f"- {100 * n / self.busy:.1f}% `{frame}`"
                for frame, n in self.self_counts.most_common(top)]
        ours = [(frame, n) for frame, n in self.incl_counts.most_common()
                if "daemon/" in frame or "rpc/" in frame][:top]
        out += ["", "Our functions with most samples under them:", ""]
        out += [f"- {100 * n / self.busy:.1f}% `{frame}`" for frame, n in ours]
        return "\n".join(out) + "\n"


@dataclass
class CpuSplit:
    """CPU time of a scenario's daemons by library, from `perf record -e cpu-clock`."""

    title: str
    samples: int = 0
    wall_s: float = 0.0
    libraries: collections.Counter[str] = field(default_factory=collections.Counter)
    others: collections.Counter[str] = field(default_factory=collections.Counter)
    missing: str = ""  # why there is no split

    @classmethod
    def read(cls, title: str, path: Path, wall_s: float) -> CpuSplit:
        """Summarize a perf.data file by shared object."""
        report = subprocess.run(
            ["perf", "report", "-i", str(path), "--no-children", "--sort", "dso", "--stdio",
             "-g", "none", "-q", "-n"], capture_output=True, text=True, timeout=300)
        split = cls.parse(title, report.stdout, wall_s)
        if not split.samples:
            split.missing = f"perf recorded nothing: {report.stderr.strip()[:200]}"
        return split

    @classmethod
    def parse(cls, title: str, report: str, wall_s: float) -> CpuSplit:
        """Sum `perf report -n --sort dso -q` lines (share, samples, object) by library."""
        split = cls(title, wall_s=wall_s)
        for line in report.splitlines():
            fields = line.split()
            if len(fields) < 3 or not fields[1].isdigit():
                continue
            n, dso = int(fields[1]), " ".join(fields[2:])
            library = library_of(dso)
            split.samples += n
            split.libraries[library] += n
            if library == "other":
                split.others[dso] += n
        return split

    def markdown(self) -> str:
        """The table of one scenario."""
        head = f"### {self.title}\n"
        if self.missing:
            return f"{head}\n{self.missing}\n"
        cpu = self.samples / PERF_HZ
        out = [head, f"{self.samples} samples at {PERF_HZ} Hz: {cpu:.1f} s of CPU in "
               f"{self.wall_s:.0f} s\n", "| library | share |", "| --- | ---: |"]
        for library, n in self.libraries.most_common():
            out.append(f"| {library} | {100 * n / self.samples:.1f}% |")
        if self.others:
            out += ["", "Other: " + ", ".join(
                f"`{dso}` {100 * n / self.samples:.1f}%" for dso, n in self.others.most_common(5))]
        return "\n".join(out) + "\n"


def _first_match(table: tuple[tuple[str, str], ...], text: str) -> str:
    """The name of the first (name, pattern) of `table` whose pattern `text` matches, or
    'other'."""
    for name, pattern in table:
        if re.search(pattern, text):
            return name
    return "other"


def library_of(dso: str) -> str:
    """The library a shared object belongs to (LIBRARIES), or 'other'."""
    return _first_match(LIBRARIES, dso)


def layer_of(frame: str) -> str:
    """The layer a frame's file belongs to (LAYERS), or 'other'."""
    return _first_match(LAYERS, frame[frame.rfind("(") + 1 :].rstrip(")"))


class Recorder:
    """py-spy on some daemons, and perf on all of a scenario's, while a `record` block
    runs; the summaries in `profiles` and `splits`."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.profiles: list[Profile] = []
        self.splits: list[CpuSplit] = []
        self.perf = shutil.which("perf")

    @contextmanager
    def record(self, targets: list[tuple[str, DaemonProcess]], title: str,
               everyone: list[DaemonProcess]) -> Iterator[None]:
        """Record each (title, daemon) with py-spy and `everyone` with perf, together
        under `title`, while the block runs."""
        perf_out = self.scratch / f"perf-{len(self.splits)}.data"
        perf = None
        if self.perf is not None:
            perf = subprocess.Popen(
                [self.perf, "record", "-e", "cpu-clock", "-F", str(PERF_HZ), "-o",
                 str(perf_out), "-p", ",".join(str(d.pid) for d in everyone)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        spies = []
        for i, (spy_title, daemon) in enumerate(targets):
            out = self.scratch / f"{len(self.profiles) + i}.txt"
            spy = subprocess.Popen(
                [str(BIN / "py-spy"), "record", "--pid", str(daemon.pid), "--rate",
                 str(RATE_HZ), "--format", "raw", "--output", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            spies.append((spy_title, out, spy))
        time.sleep(1.0)  # py-spy attaches
        started = time.monotonic()
        try:
            yield
        finally:
            wall = time.monotonic() - started
            for _, _, spy in spies:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            if perf is not None:
                perf.send_signal(signal.SIGINT)
            for spy_title, out, spy in spies:
                _, err = spy.communicate(timeout=60)
                if not out.exists():
                    raise RuntimeError(f"py-spy wrote nothing for {spy_title}: {err.strip()}")
                self.profiles.append(Profile.read(spy_title, out, wall))
            if perf is None:
                self.splits.append(CpuSplit(title, missing="perf is not installed "
                                            "(Debian: apt-get install linux-perf)"))
            else:
                _, err = perf.communicate(timeout=120)
                if perf_out.exists():
                    self.splits.append(CpuSplit.read(title, perf_out, wall))
                else:
                    self.splits.append(CpuSplit(title, missing=f"perf failed: {err.strip()}"))


def scenario_burst(rec: Recorder) -> None:
    """burst and idle on one cluster of 10."""
    cfg = burst.BurstConfig(daemons=10, messages=1000, rounds=1)
    with Cluster("prof-burst") as cluster:
        daemons = cluster.start_many(cfg.daemons)
        cluster.connect(sparse_topology(cfg.daemons, cfg.dials, cfg.seed))
        senders = burst.sender_indexes(cfg.daemons, cfg.senders)
        sender = senders[0]
        forwarder = next(i for i in range(cfg.daemons) if i not in senders)
        with rec.record([("burst: a sender (10 daemons, 1,000 messages)", daemons[sender]),
                         ("burst: a forwarder", daemons[forwarder])],
                        "burst (10 daemons, 1,000 messages)", daemons):
            rounds = burst.run_rounds(cluster, cfg, burst.gossipchat_round)
        print(f"   burst converged in {rounds[0].converge_s} s (profiled)", flush=True)
        wait_quiet([d.pid for d in daemons], below_cores=burst.quiet_cores(len(daemons)),
                   timeout=60)
        with rec.record([("idle: a member of the same room, after the burst, 30 s",
                          daemons[forwarder])], "idle (10 daemons, 30 s)", daemons):
            time.sleep(30)


def scenario_propagation(rec: Recorder) -> None:
    """Paced messages in a room of 20."""
    n, rate, seconds = 20, 20.0, 15.0
    with Cluster("prof-prop") as cluster:
        daemons = cluster.start_many(n)
        cluster.connect(sparse_topology(n, 3, SEED))
        room = "prof-prop"
        cluster.join_all(room)
        cluster.wait_room_known(room)
        clients = [d.client() for d in daemons]
        try:
            wait_quiet([d.pid for d in daemons], timeout=60)
            with rec.record([("propagation: a member (20 daemons, 20 messages/s)",
                              daemons[n // 2])], "propagation (20 daemons, 20 messages/s)",
                            daemons):
                start = time.monotonic()
                for i in range(int(rate * seconds)):
                    # The pacing is the scenario itself, not a wait for a condition.
                    time.sleep(max(0.0, start + i / rate - time.monotonic()))
                    clients[i % n].send(room, f"p{i}")
        finally:
            for c in clients:
                c.close()


def scenario_fetch(rec: Recorder) -> None:
    """A 10 MB image from one daemon to another."""
    with Cluster("prof-fetch") as cluster, tempfile.TemporaryDirectory() as tmp:
        poster, fetcher = cluster.start_many(2)
        cluster.connect([(0, 1)])
        images = [Path(tmp) / f"image{i}.png" for i in range(FETCH_IMAGES)]
        for i, image in enumerate(images):
            fanout.make_noisy_png(image, 10 * fanout.MIB, SEED + i)
        room = "prof-fetch"
        cluster.join_all(room)
        cluster.wait_room_known(room)
        with rec.record([(f"fetch: the poster ({FETCH_IMAGES} images of 10 MB, one at a "
                          "time, two daemons)", poster), ("fetch: the fetcher", fetcher)],
                        "fetch (2 daemons)", [poster, fetcher]), \
                poster.client(timeout=60) as sender, fetcher.client(timeout=120) as client:
            for image in images:
                cid: str = sender.send_image(room, image)["image"]["cid"]
                wait_for(partial(_holds, client, cid), timeout=120, interval=0.05,
                         message="the fetcher to hold the image")


def _holds(client: Client, cid: str) -> bool:
    try:
        client.fetch(cid)
    except RpcError as exc:  # "not found" while the message is on its way
        if "not found" not in exc.message.lower():
            raise
        return False
    return True


def scenario_fanout(rec: Recorder) -> None:
    """One 5 MB image to a room of 20."""
    cfg = fanout.FanoutConfig(daemons=20, rounds=1)
    with Cluster("prof-fanout") as cluster, tempfile.TemporaryDirectory() as tmp:
        daemons = cluster.start_many(cfg.daemons)
        cluster.connect(sparse_topology(cfg.daemons, cfg.dials, cfg.seed))
        image = Path(tmp) / "image.png"
        size = fanout.make_noisy_png(image, int(cfg.size_mb * fanout.MIB), cfg.seed)
        with rec.record([("fanout: the poster (5 MB to 19 members)", daemons[0]),
                         ("fanout: a member", daemons[cfg.daemons // 2])],
                        "fanout (20 daemons, 5 MB)", daemons):
            result = fanout._round(cluster, cfg, 0, image, size)
        print(f"   fanout: all have it in {result['all_have_s']} s, sender uploaded "
              f"{result['sender_upload_ratio']}x (profiled)", flush=True)


def scenario_rpc(rec: Recorder) -> None:
    """Sequential calls on one connection."""
    with Cluster("prof-rpc") as cluster:
        (daemon,) = cluster.start_many(1)
        daemon.call("join", room="prof-rpc")
        for method in ("status", "blocked"):
            with rec.record([(f"rpc: `{method}`, one call at a time", daemon)],
                            f"rpc `{method}`", [daemon]):
                rate = rpc_calls.sequential_calls(daemon, method, 4.0)
            print(f"   rpc {method}: {rate:.0f} calls/s (profiled)", flush=True)


SCENARIOS: dict[str, Callable[[Recorder], None]] = {
    "burst": scenario_burst,
    "propagation": scenario_propagation,
    "fetch": scenario_fetch,
    "fanout": scenario_fanout,
    "rpc": scenario_rpc,
}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios under py-spy and write profiles.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", metavar="NAMES", help=f"comma list of {','.join(SCENARIOS)}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    chosen = list(SCENARIOS) if not args.only else args.only.split(",")
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if shutil.which("py-spy", path=str(BIN)) is None:
        print("py-spy is not installed in this venv: pip install -e '.[bench]'",
              file=sys.stderr)
        return 2
    procs.install()
    commit, dirty = git_commit()
    with tempfile.TemporaryDirectory(prefix="gcb-profile-") as scratch:
        rec = Recorder(Path(scratch))
        for name in chosen:
            print(f"== {name} ...", flush=True)
            try:
                SCENARIOS[name](rec)
            finally:
                procs.kill_all()
    lines = [
        "# Where the daemons' CPU goes (`python -m bench.profile`)\n",
        f"Commit {commit}{' (dirty)' if dirty else ''}, "
        f"{datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}. "
        "py-spy samples of real gossipchatd processes; shares of busy samples only "
        "(a profiled daemon runs slower, so the bench's own figures are elsewhere).\n",
        "## CPU time by library (perf)\n",
        "Every daemon of each scenario, sampled on CPU time only: the honest split "
        "between the interpreter and the native libraries (see the module's doc).\n",
    ]
    lines += [split.markdown() for split in rec.splits]
    lines += ["## Python functions (py-spy)\n",
              "Runnable-but-waiting samples count as busy here (see the module's doc): "
              "read the shares within the interpreter's part.\n"]
    lines += [p.markdown() for p in rec.profiles]
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "profiles.md"
    target.write_text("\n".join(lines))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
