"""Images between real daemons: exchange, spreading, refusals, privacy, paths."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from harness.daemons import Cluster, DaemonProcess, connect, wait_mesh
from harness.waiting import wait_for
from tests.transports import TRANSPORTS, open_client


def noisy_png(path: Path, width: int = 1500, height: int = 1200, seed: int = 1) -> bytes:
    """A PNG of random pixels (incompressible: about 5.4 MB at 1500x1200)."""
    rng = random.Random(seed)
    Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3)).save(path)
    return path.read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_messages(d: DaemonProcess, room: str) -> list[dict]:
    return [m for m in d.call("history", room=room) if m["kind"] == "image"]


def holds(d: DaemonProcess, size: int) -> bool:
    return d.call("status")["images"]["bytes"] >= size


@pytest.fixture
def trio_of_daemons(cluster: Cluster) -> list[DaemonProcess]:
    a, b, c = (cluster.start(n) for n in "abc")
    connect(a, b)
    connect(a, c)
    connect(b, c)
    for d in (a, b, c):
        d.call("join", room="pics")
    wait_mesh(a, "pics", 2)
    return [a, b, c]


def test_image_reaches_members_byte_for_byte_and_survives_the_sender(
    cluster: Cluster, trio_of_daemons: list[DaemonProcess]
) -> None:
    a, b, c = trio_of_daemons
    original = noisy_png(cluster.root / "photo.png")
    sent = a.cli("send", "pics", "--image", str(cluster.root / "photo.png"), "look", "at", "this")
    assert sent.returncode == 0, sent.stderr
    message_id, cid = sent.stdout.split()
    started = time.monotonic()
    wait_for(lambda: image_messages(b, "pics"), message="image message at b")
    msg = image_messages(b, "pics")[0]
    assert msg["id"] == message_id
    assert msg["text"] == "look at this"
    image = msg["image"]
    assert image["cid"] == cid
    assert (image["width"], image["height"]) == (1500, 1200)
    assert image["mime"] == "image/png"
    assert image["size"] == len(original)
    assert image["filename"] == "photo.png"
    thumb = base64.b64decode(image["thumbnail"])
    assert len(thumb) <= 16 * 1024
    with Image.open(io.BytesIO(thumb)) as t:
        assert max(t.size) <= 256
        assert t.format in ("JPEG", "WEBP")
    # Both members fetch it by themselves (auto-fetch, 5.4 MB < 10 MiB).
    wait_for(lambda: holds(b, len(original)) and holds(c, len(original)), timeout=60,
             message="b and c hold the image")
    print(f"auto-fetch by both members: {time.monotonic() - started:.2f} s for 5.4 MB")
    # The sender served the blocks it had just stored from memory, not from disk.
    assert a.call("status")["images"]["blocks_from_memory"] > 0

    out = cluster.root / "out-b"
    out.mkdir()
    got = b.cli("fetch", cid, "-o", str(out / "copy.png"))
    assert got.returncode == 0, got.stderr
    assert sha((out / "copy.png").read_bytes()) == sha(original)

    # The sender dies; c fetches from b alone.
    a.kill()
    target = cluster.root / "out-c"
    target.mkdir()
    fetched = run_in(target, c, "fetch", cid, "--force")
    assert fetched.returncode == 0, fetched.stderr
    assert sha((target / "photo.png").read_bytes()) == sha(original)


def run_in(directory: Path, d: DaemonProcess, *args: str):
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        return d.cli(*args)
    finally:
        os.chdir(cwd)


def test_late_member_fetches_after_the_sender_left(cluster: Cluster) -> None:
    a, b = cluster.start("a"), cluster.start("b")
    connect(a, b)
    for d in (a, b):
        d.call("join", room="keep")
    wait_mesh(a, "keep", 1)
    original = noisy_png(cluster.root / "p.png", 600, 400, seed=2)
    cid = a.call("send_image", room="keep", path=str(cluster.root / "p.png"))["image"]["cid"]
    wait_for(lambda: holds(b, len(original)), timeout=60, message="b holds it")
    a.terminate()
    c = cluster.start("c")
    connect(b, c)
    c.call("join", room="keep")
    wait_for(lambda: image_messages(c, "keep"), timeout=30, message="c has the message")
    wait_for(lambda: holds(c, len(original)), timeout=60, message="c holds the image")
    result = c.call("fetch", cid=cid, path=str(cluster.root / "c.png"))
    assert result["size"] == len(original)
    assert sha((cluster.root / "c.png").read_bytes()) == sha(original)


def _bomb_png(path: Path, side: int = 30_000) -> None:
    """A valid PNG header claiming side x side pixels, with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))


def test_bad_images_are_refused_with_clear_errors(cluster: Cluster) -> None:
    home = cluster.home("a")
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text("image_max_bytes = 1000000\n")
    a = cluster.start("a")
    a.call("join", room="r")
    text = cluster.root / "notes.txt"
    text.write_text("just words, not pixels\n" * 10)
    out = a.cli("send", "r", "--image", str(text))
    assert out.returncode == 1
    assert "not an image" in out.stderr
    big = cluster.root / "big.png"
    noisy_png(big, 800, 600)
    out = a.cli("send", "r", "--image", str(big))
    assert out.returncode == 1
    assert "image too large" in out.stderr
    bomb = cluster.root / "bomb.png"
    _bomb_png(bomb)
    out = a.cli("send", "r", "--image", str(bomb))
    assert out.returncode == 1
    assert "image too large" in out.stderr
    assert "pixels" in out.stderr
    out = a.cli("send", "r", "--image", str(cluster.root / "missing.png"))
    assert out.returncode == 1
    assert "no such file" in out.stderr
    out = a.cli("send", "r", "--image", str(cluster.root))
    assert out.returncode == 1
    assert "not a regular file" in out.stderr
    # Nothing of that was stored or posted.
    status = a.call("status")
    assert status["messages"] == 0
    assert status["images"]["blocks"] == 0


def test_unknown_cid_fails_cleanly(cluster: Cluster) -> None:
    a, b = cluster.start("a"), cluster.start("b")
    connect(a, b)
    unknown = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    started = time.monotonic()
    out = a.cli("fetch", unknown, "--timeout", "3")
    assert out.returncode == 1
    assert "not found" in out.stderr
    assert time.monotonic() - started < 30
    lonely = cluster.start("lonely")
    out = lonely.cli("fetch", unknown, "--timeout", "2")
    assert out.returncode == 1
    assert "not found" in out.stderr
    bad = a.cli("fetch", "not-a-cid")
    assert bad.returncode == 1
    assert "not a CID" in bad.stderr


def _jpeg_with_gps(path: Path) -> bytes:
    image = Image.frombytes("RGB", (320, 240), random.Random(3).randbytes(320 * 240 * 3))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (52.0, 31.0, 12.0)
    gps[3] = "E"
    gps[4] = (13.0, 24.0, 36.0)
    image.save(path, "JPEG", exif=exif.tobytes(), quality=90)
    return path.read_bytes()


def test_location_metadata_is_stripped_unless_kept(cluster: Cluster) -> None:
    a, b = cluster.start("a"), cluster.start("b")
    connect(a, b)
    for d in (a, b):
        d.call("join", room="geo")
    wait_mesh(a, "geo", 1)
    src = cluster.root / "gps.jpg"
    original = _jpeg_with_gps(src)
    with Image.open(src) as im:
        assert im.getexif().get_ifd(0x8825)  # the fixture really carries GPS
    sent = a.call("send_image", room="geo", path=str(src))
    got = b.call("fetch", cid=sent["image"]["cid"], path=str(cluster.root / "got.jpg"),
                 timeout=30)
    data = (cluster.root / "got.jpg").read_bytes()
    assert got["size"] == len(data) < len(original)
    with Image.open(io.BytesIO(data)) as im:
        assert not im.getexif().get_ifd(0x8825)
        with Image.open(src) as orig:
            assert im.tobytes() == orig.tobytes()  # same pixels: nothing re-encoded
    kept = a.call("send_image", room="geo", path=str(src), keep_metadata=True)
    b.call("fetch", cid=kept["image"]["cid"], path=str(cluster.root / "kept.jpg"), timeout=30)
    assert (cluster.root / "kept.jpg").read_bytes() == original


def test_fetch_never_writes_outside_the_directory(cluster: Cluster) -> None:
    a = cluster.start("a")
    a.call("join", room="paths")
    src = cluster.root / "x.png"
    noisy_png(src, 64, 64)
    cid = a.call("send_image", room="paths", path=str(src), filename="../../escape.png")[
        "image"]["cid"]
    assert a.call("history", room="paths")[-1]["image"]["filename"] == "escape.png"
    inside = cluster.root / "deep" / "inside"
    inside.mkdir(parents=True)
    out = run_in(inside, a, "fetch", cid)
    assert out.returncode == 0, out.stderr
    assert (inside / "escape.png").exists()
    assert not (cluster.root / "escape.png").exists()
    # Never over an existing file without --force.
    again = run_in(inside, a, "fetch", cid)
    assert again.returncode == 1
    assert "exists" in again.stderr
    assert run_in(inside, a, "fetch", cid, "--force").returncode == 0
    # A symlink planted at the target is refused even with --force.
    (inside / "escape.png").unlink()
    (inside / "escape.png").symlink_to(cluster.root / "victim")
    assert run_in(inside, a, "fetch", cid, "--force").returncode == 1
    assert not (cluster.root / "victim").exists()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_image_from_base64_data_over_rpc(cluster: Cluster, transport: str) -> None:
    a = cluster.start("a")
    a.call("join", room="b64")
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(buf, "GIF")
    with open_client(a, transport) as c:
        msg = c.call("send_image", room="b64", data=base64.b64encode(buf.getvalue()).decode(),
                     filename="red.gif", caption="red")
    assert msg["image"]["mime"] == "image/gif"
    assert (msg["image"]["width"], msg["image"]["height"]) == (40, 30)
    assert msg["text"] == "red"
    with open_client(a, transport) as c:
        from gossipchat.clients import RpcError

        with pytest.raises(RpcError) as err:
            c.call("send_image", room="b64", data="%%%not base64")
        assert "base64" in err.value.message
        with pytest.raises(RpcError) as err:
            c.call("send_image", room="b64")
        assert "exactly one of path or data" in err.value.message


def test_fetch_two_hops_away_waits_for_the_image_to_spread(cluster: Cluster) -> None:
    a, b, c = (cluster.start(n) for n in "abc")
    connect(a, b)
    connect(b, c)  # c's only neighbour is b, which does not hold the image yet
    for d in (a, b, c):
        d.call("join", room="far")
    wait_mesh(b, "far", 2)
    original = noisy_png(cluster.root / "far.png", 800, 600, seed=5)
    cid = a.call("send_image", room="far", path=str(cluster.root / "far.png"))["image"]["cid"]
    got = c.call("fetch", cid=cid, path=str(cluster.root / "at-c.png"), timeout=30)
    assert got["size"] == len(original)
    assert sha((cluster.root / "at-c.png").read_bytes()) == sha(original)


def test_bad_caption_is_refused_before_anything_is_stored_or_pinned(cluster: Cluster) -> None:
    from gossipchat.clients import RpcError

    a = cluster.start("a")
    a.call("join", room="cap")
    src = cluster.root / "c.png"
    noisy_png(src, 64, 64)
    with a.client() as c:
        with pytest.raises(RpcError) as err:
            c.call("send_image", room="cap", path=str(src), caption="half \ud800 a pair")
        assert err.value.code == -32004
        assert "caption is not valid Unicode" in err.value.message
        with pytest.raises(RpcError) as err:
            c.call("send_image", room="cap", path=str(src), caption="x" * (64 * 1024 + 1))
        assert err.value.code == -32003
    images = a.call("status")["images"]
    assert images["pinned_images"] == 0
    assert images["blocks"] == 0
    assert a.call("history", room="cap") == []
    # The same image with a proper caption goes out, and only it is pinned.
    assert a.call("send_image", room="cap", path=str(src), caption="fine")["text"] == "fine"
    assert a.call("status")["images"]["pinned_images"] == 1


def test_leaving_a_room_unpins_its_images_but_not_those_another_room_shows(
        cluster: Cluster) -> None:
    a = cluster.start("a")
    for room in ("pics", "other"):
        a.call("join", room=room)
    paths = []
    for n in range(3):
        paths.append(cluster.root / f"p{n}.png")
        noisy_png(paths[-1], 32, 32, seed=n)
    for path in paths:
        a.call("send_image", room="pics", path=str(path))
    a.call("send_image", room="other", path=str(paths[0]))  # the same image, again
    assert a.call("status")["images"]["pinned_images"] == 3

    a.call("leave", room="pics")
    assert a.call("status")["images"]["pinned_images"] == 1  # what "other" shows
    a.stop()
    a = cluster.start("a")  # the pins' change was made durable
    assert a.call("status")["images"]["pinned_images"] == 1


def test_paths_the_daemon_cannot_use_are_named_in_a_path_error(cluster: Cluster) -> None:
    from gossipchat.clients import RpcError

    a = cluster.start("a")
    a.call("join", room="proc")
    src = cluster.root / "p.png"
    noisy_png(src, 32, 32)
    cid = a.call("send_image", room="proc", path=str(src))["image"]["cid"]
    with a.client() as c:
        for path in ("/proc/self/x", "/proc/self/mem", str(cluster.root / "no\x00pe.png")):
            with pytest.raises(RpcError) as err:
                c.call("fetch", cid=cid, path=path)
            assert err.value.code == -32011, (path, err.value.message)
            assert repr(path)[1:-1] in err.value.message or path in err.value.message
        for path in ("/proc/self/mem", "/proc/self/x", str(cluster.root / "no\x00pe.png")):
            with pytest.raises(RpcError) as err:
                c.call("send_image", room="proc", path=path)
            assert err.value.code == -32011, (path, err.value.message)
            assert repr(path)[1:-1] in err.value.message or path in err.value.message
    assert len(a.call("history", room="proc")) == 1
    assert a.call("id")["peer_id"] == a.peer_id


def test_members_serve_each_other_not_only_the_poster(cluster: Cluster) -> None:
    """Four members and the poster, all connected: the members fetch the image at the
    same time (auto-fetch), ask each other want-have, and take blocks from members that
    got them first, so the poster is not the only one that serves blocks."""
    poster, *members = (cluster.start(n) for n in ("poster", "m1", "m2", "m3", "m4"))
    everyone = [poster, *members]
    for i, a in enumerate(everyone):
        for b in everyone[i + 1:]:
            connect(a, b)
    for d in everyone:
        d.call("join", room="pics")
    for d in everyone:
        wait_mesh(d, "pics", len(everyone) - 1)
    original = noisy_png(cluster.root / "fanout.png", 1400, 1000, seed=5)
    poster.call("send_image", room="pics", path=str(cluster.root / "fanout.png"))
    wait_for(lambda: all(m.call("status")["images"]["auto_fetched"] == 1 for m in members),
             timeout=120, message="every member to fetch the image")
    served: dict[str, int] = {}  # blocks each peer served the members
    for m in members:
        exchange = m.call("status")["images"]["exchange"]
        for peer, counters in exchange["peers"].items():
            served[peer] = served.get(peer, 0) + counters["blocks_received"]
    names = {d.peer_id: d.name for d in everyone}
    print({names.get(peer, peer): n for peer, n in served.items()},
          f"poster sent {poster.call('status')['images']['exchange']['bytes_sent']} bytes "
          f"of a {len(original)}-byte image")
    from_members = sum(n for peer, n in served.items() if peer != poster.peer_id)
    assert from_members > 0, served
    for m in members:
        assert m.call("status")["images"]["exchange"]["bad_blocks"] == 0


def test_two_fetches_of_one_image_at_once_ask_the_peers_once(cluster: Cluster) -> None:
    """Two clients fetch the same image at the same moment: the second waits for the
    first (`images.fetches_joined`) instead of running a second exchange beside it,
    and both get the whole image."""
    a = cluster.start("a")
    home = cluster.home("b")
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("auto_fetch_max = 0\n")  # only the two calls fetch
    b = cluster.start("b")
    connect(a, b)
    for d in (a, b):
        d.call("join", room="pics")
    wait_mesh(a, "pics", 1)
    original = noisy_png(cluster.root / "shared.png", seed=9)
    cid = a.call("send_image", room="pics", path=str(cluster.root / "shared.png"))["image"]["cid"]
    wait_for(lambda: image_messages(b, "pics"), timeout=30, message="the image message at b")
    start = threading.Barrier(2)
    sizes: list[int] = []

    def fetch() -> None:
        with b.client(timeout=60) as client:
            start.wait()
            sizes.append(client.call("fetch", cid=cid)["size"])

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert sizes == [len(original), len(original)]
    images = b.call("status")["images"]
    assert images["fetches_joined"] == 1
    assert images["exchange"]["duplicate_blocks"] == 0
    assert images["bytes"] >= len(original)
