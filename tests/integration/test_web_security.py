"""The web UI's security layers against a real daemon, over raw HTTP and WebSocket.

Each layer has its own test: a wrong Host (DNS rebinding), a foreign Origin, no token,
a token in the wrong place, the headers on every response, image serving, the login
ticket, the token file, and `p2pctl ui` keeping the token off every command line.
"""

from __future__ import annotations

import base64
import http.client
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gossipchat.daemon.adapters.blockstore import BlockStore
from gossipchat.daemon.core import unixfs
from gossipchat.rpc import weblogin
from gossipchat.rpc.client import ConnectionLost
from harness.daemons import Cluster, DaemonProcess, run_p2pctl
from harness.waiting import wait_for
from tests.transports import WsConnection, ws_url
from tests.wsclient import SyncWebSocket, WebSocketRejected


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    """One daemon for the checks that only read: each layer is a request, not a restart."""
    shared = Cluster()
    try:
        yield shared.start("shared")
    finally:
        shared.close()


def _request(daemon: DaemonProcess, path: str, headers: dict[str, str | None] | None = None,
             method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP request; the Host header is exactly what the test gives."""
    parts = urlsplit(daemon.web_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        sent = {"Host": parts.netloc, **(headers or {})}
        for name, value in sent.items():
            if value is not None:
                conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def _bearer(daemon: DaemonProcess) -> dict[str, str | None]:
    return {"Authorization": f"Bearer {daemon.web_token}"}


def _ws_status(daemon: DaemonProcess, headers: dict[str, str | None]) -> int:
    """The HTTP status of a raw WebSocket handshake (101 when accepted).

    Raw, because client libraries set Host themselves and the tests need to choose it.
    """
    parts = urlsplit(daemon.web_url)
    sent: dict[str, str | None] = {
        "Host": parts.netloc, "Upgrade": "websocket", "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13", **headers}
    lines = ["GET /rpc HTTP/1.1", *(f"{k}: {v}" for k, v in sent.items() if v is not None)]
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def _assert_page_headers(headers: dict[str, str]) -> None:
    csp = headers.get("content-security-policy", "")
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert headers.get("x-content-type-options") == "nosniff"
    assert not [h for h in headers if h.startswith("access-control-")], headers


def test_ready_line_status_and_token_file(daemon: DaemonProcess) -> None:
    assert daemon.web_url.startswith("http://127.0.0.1:")
    assert f" web={daemon.web_url}" in daemon.ready_line
    status = daemon.call("status")
    assert status["web"] == daemon.web_url
    assert status["reachability"] in ("public", "private", "unknown")
    token_file = daemon.home / "web.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(daemon.web_token) >= 32
    # The URL the daemon shows anywhere carries no token.
    assert daemon.web_token not in daemon.ready_line
    assert daemon.web_token not in str(status)


def test_web_listen_off_and_a_non_loopback_address(cluster: Cluster) -> None:
    off = cluster.start("off", "--web-listen", "off")
    assert " web=" not in off.ready_line
    assert off.call("status")["web"] is None
    assert not (off.home / "web.token").exists()
    refused = run_p2pctl("--home", str(off.home), "ui", "--url")
    assert refused.returncode == 1
    assert "web UI is off" in refused.stderr
    done = subprocess.run(
        [str(Path(sys.executable).parent / "gossipchatd"), "--home",
         str(cluster.home("public")), "--web-listen", "0.0.0.0:4180"],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "loopback" in done.stderr


def test_a_chosen_port_that_is_taken_fails_the_start(cluster: Cluster,
                                                     daemon: DaemonProcess) -> None:
    taken = urlsplit(daemon.web_url).netloc
    done = subprocess.run(
        [str(Path(sys.executable).parent / "gossipchatd"), "--home", str(cluster.home("b")),
         "--listen", "/ip4/127.0.0.1/tcp/0", "--web-listen", taken, "--no-mdns"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "web UI" in done.stderr
    assert "--web-listen" in done.stderr


@pytest.mark.parametrize("host", [
    "evil.example", "rebind.attacker.test:4180", "192.168.1.7", "0.0.0.0", "localhost.evil.test",
    None,
])
def test_wrong_host_gets_nothing(daemon: DaemonProcess, host: str | None) -> None:
    headers: dict[str, str | None] = {**_bearer(daemon), "Host": host}
    status, response_headers, body = _request(daemon, "/", headers)
    assert b"app.js" not in body
    if host is None:
        assert status == 400  # HTTP/1.1 without Host: refused before the app sees it
    else:
        assert status == 403
        _assert_page_headers(response_headers)
    assert _ws_status(daemon, headers) in ((403,) if host else (400, 403))


@pytest.mark.parametrize("host_of", ["localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}"])
def test_loopback_names_are_accepted(daemon: DaemonProcess, host_of: str) -> None:
    port = urlsplit(daemon.web_url).port
    status, _, body = _request(daemon, "/", {**_bearer(daemon), "Host": host_of.format(port=port)})
    assert status == 200
    assert b'<script type="module" src="/app.js">' in body


@pytest.mark.parametrize("origin", [
    "http://evil.example", "null", "http://127.0.0.1:1", "http://localhost.evil.test",
    "https://{netloc}",
])
def test_foreign_origin_is_refused(daemon: DaemonProcess, origin: str) -> None:
    netloc = urlsplit(daemon.web_url).netloc
    headers = {**_bearer(daemon), "Origin": origin.format(netloc=netloc)}
    assert _ws_status(daemon, headers) == 403
    status, response_headers, _ = _request(daemon, "/", headers)
    assert status == 403
    _assert_page_headers(response_headers)


def test_own_origin_and_no_origin_are_accepted(daemon: DaemonProcess) -> None:
    netloc = urlsplit(daemon.web_url).netloc
    assert _ws_status(daemon, {**_bearer(daemon), "Origin": f"http://{netloc}"}) == 101
    assert _ws_status(daemon, _bearer(daemon)) == 101


@pytest.mark.parametrize("path", ["/", "/app.js", "/style.css", "/image/bafkreiabc", "/rpc"])
def test_no_token_gets_nothing(daemon: DaemonProcess, path: str) -> None:
    status, headers, body = _request(daemon, path)
    assert status == 401
    assert b"p2pctl ui" in body
    assert b"app.js" not in body
    _assert_page_headers(headers)
    assert _ws_status(daemon, {}) == 403


def test_token_in_the_wrong_place_gets_nothing(daemon: DaemonProcess) -> None:
    token = daemon.web_token
    port = urlsplit(daemon.web_url).port
    wrong_places = [
        ("/?token=" + token, {}),
        ("/?access_token=" + token, {}),
        ("/", {"Authorization": token}),
        ("/", {"Authorization": f"Basic {token}"}),
        ("/", {"Authorization": f"Token {token}"}),
        ("/", {"X-Token": token}),
        ("/", {"X-Auth-Token": token}),
        ("/", {"Cookie": f"token={token}"}),
        ("/", {"Cookie": f"gossipchat-{port + 1}={token}"}),
        ("/", {"Authorization": f"Bearer {token[:-1]}"}),
    ]
    for path, headers in wrong_places:
        status, _, _ = _request(daemon, path, headers)
        assert status == 401, (path, headers)
    # The token is no login ticket, and the WebSocket takes it only as Bearer or cookie.
    assert _request(daemon, f"/login?ticket={token}")[0] == 403
    assert _ws_status(daemon, {"Sec-WebSocket-Protocol": token}) == 403
    with pytest.raises(WebSocketRejected) as refused:
        SyncWebSocket(ws_url(daemon) + f"?token={token}", timeout=10)
    assert refused.value.status == 403
    # The right places work.
    assert _request(daemon, "/", _bearer(daemon))[0] == 200
    assert _request(daemon, "/", {"Cookie": f"gossipchat-{port}={token}"})[0] == 200


def test_only_get_and_head(daemon: DaemonProcess) -> None:
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        status, headers, _ = _request(daemon, "/", _bearer(daemon), method=method)
        assert status == 405, method
        assert not [h for h in headers if h.startswith("access-control-")]


def test_login_ticket_sets_a_strict_httponly_cookie_once(daemon: DaemonProcess) -> None:
    token = daemon.web_token
    ticket = weblogin.make_ticket(token, time.time())
    status, headers, body = _request(daemon, f"/login?ticket={ticket}")
    assert status == 200
    cookie = headers["set-cookie"]
    port = urlsplit(daemon.web_url).port
    assert cookie.startswith(f"gossipchat-{port}={token};")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert b'http-equiv="refresh"' in body
    # One use only; an expired or forged ticket fails too.
    assert _request(daemon, f"/login?ticket={ticket}")[0] == 403
    old = weblogin.make_ticket(token, time.time() - 3600)
    assert _request(daemon, f"/login?ticket={old}")[0] == 403
    forged = weblogin.make_ticket("not-the-token-" * 4, time.time())
    assert _request(daemon, f"/login?ticket={forged}")[0] == 403


def test_p2pctl_ui_keeps_the_token_off_command_lines(daemon: DaemonProcess,
                                                     tmp_path: Path) -> None:
    url = daemon.cli("ui", "--url")
    assert url.returncode == 0, url.stderr
    link = url.stdout.strip()
    assert link.startswith(daemon.web_url + "login?ticket=")
    assert daemon.web_token not in link
    # `p2pctl ui` starts the browser on a 0600 file; the browser's argv holds its path.
    record = tmp_path / "argv.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    browser.chmod(0o700)
    opened = run_p2pctl("--home", str(daemon.home), "ui", env={"BROWSER": str(browser)})
    assert opened.returncode == 0, opened.stderr
    argv = wait_for(lambda: record.exists() and record.read_text().strip(),
                    message="the browser to be started")
    assert argv.startswith("file://")
    assert daemon.web_token not in argv
    assert "ticket" not in argv
    redirect = Path(argv.removeprefix("file://"))
    assert stat.S_IMODE(redirect.stat().st_mode) == 0o600
    page = redirect.read_text()
    assert daemon.web_url + "login?ticket=" in page
    assert daemon.web_token not in page
    # The ticket in the file logs in.
    ticket = page.split("ticket=", 1)[1].split('"', 1)[0]
    assert _request(daemon, f"/login?ticket={ticket}")[0] == 200


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def test_images_are_served_with_fixed_type_nosniff_and_sandbox(daemon: DaemonProcess) -> None:
    daemon.call("join", room="pics")
    with daemon.client() as c:
        posted = c.send_image("pics", data=_png(), filename="red.png")
    cid = posted["image"]["cid"]
    status, headers, body = _request(daemon, f"/image/{cid}", _bearer(daemon))
    assert status == 200
    assert headers["content-type"] == "image/png"
    assert headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in headers["content-security-policy"]
    assert "default-src 'self'" in headers["content-security-policy"]
    assert body == _png()
    assert _request(daemon, f"/image/{cid}")[0] == 401
    assert _request(daemon, "/image/not-a-cid", _bearer(daemon))[0] == 404
    unknown = unixfs.cid_to_str(unixfs.import_file(b"\x89PNG\r\n\x1a\nnot here").root)
    assert _request(daemon, f"/image/{unknown}", _bearer(daemon))[0] == 404


@pytest.mark.parametrize("payload", [
    b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>",
    b"<!doctype html><html><script>alert(document.cookie)</script></html>",
    b"GIF8<script>alert(1)</script>",
])
def test_blocks_that_are_not_images_are_never_served(cluster: Cluster, payload: bytes) -> None:
    # Bytes a hostile peer could have had this node store (bitswap carries any block).
    home = cluster.home("a")
    home.mkdir(mode=0o700, parents=True)
    root = BlockStore(home / "blocks").import_file(payload)
    daemon = cluster.start("a")
    status, headers, body = _request(daemon, f"/image/{unixfs.cid_to_str(root)}",
                                     _bearer(daemon))
    assert status == 415
    assert headers["content-type"].startswith("text/plain")
    assert payload not in body


def test_websocket_connections_are_bounded(cluster: Cluster, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("rpc_max_connections = 2\n")
    daemon = cluster.start("a", "--config", str(config))
    auth = {"Authorization": f"Bearer {daemon.web_token}"}
    first = SyncWebSocket(ws_url(daemon), auth, timeout=10)
    second = SyncWebSocket(ws_url(daemon), auth, timeout=10)
    try:
        third = SyncWebSocket(ws_url(daemon), auth, timeout=10)
        refusal = third.recv()
        assert "Too many connections" in str(refusal)
        third.close()
        assert daemon.call("status")["limits"]["rpc_connections"] == 1
    finally:
        first.close()
        second.close()
    wait_for(lambda: _ws_status(daemon, _bearer(daemon)) == 101,
             message=f"a free slot (daemon running: {daemon.running}; "
                     f"{daemon.stderr_lines[-20:]}; "
                     + subprocess.run(["ss", "-tanp"], capture_output=True, text=True).stdout
                     + ")")


def test_token_file_mode_is_repaired_and_kept_across_restarts(cluster: Cluster) -> None:
    daemon = cluster.start("a")
    token = daemon.web_token
    os.chmod(daemon.home / "web.token", 0o644)
    daemon.terminate()
    again = cluster.start("a")
    assert again.web_token == token
    assert stat.S_IMODE((again.home / "web.token").stat().st_mode) == 0o600


def test_the_default_address_falls_back_to_a_free_port(cluster: Cluster) -> None:
    # Hold 127.0.0.1:4180 (or find it held already): the default must move aside.
    holder = socket.socket()
    try:
        try:
            holder.bind(("127.0.0.1", 4180))
            holder.listen(1)
        except OSError:
            pass  # taken by someone else: the daemon must move aside all the same
        home = cluster.home("default")
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "gossipchatd"), "--home", str(home),
             "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            ready = proc.stdout.readline()
            assert ready.startswith("gossipchatd ready "), proc.stderr
            web = dict(p.split("=", 1) for p in ready.split()[2:])["web"]
            assert web.startswith("http://127.0.0.1:")
            assert urlsplit(web).port != 4180
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        holder.close()


def test_a_frame_over_the_line_bound_is_refused_and_counted(cluster: Cluster,
                                                           tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("rpc_max_line_bytes = 65536\n")
    daemon = cluster.start("a", "--config", str(config))
    with WsConnection(daemon, timeout=10) as conn:
        assert conn.call("id")["peer_id"] == daemon.peer_id
        conn.send_raw(b'{"jsonrpc":"2.0","method":"send","id":1,"params":{"room":"r","text":"'
                      + b"x" * 70_000 + b'"}}')
        refusal = conn.read_value()
        assert refusal["error"]["code"] == -32600
        assert "rpc_max_line_bytes" in refusal["error"]["data"]
        with pytest.raises(ConnectionLost):
            conn.read_value()
    assert daemon.call("status")["limits"]["rpc_line_bytes"] == 1


def test_shutdown_over_the_websocket_with_other_clients_connected(cluster: Cluster) -> None:
    daemon = cluster.start("a")
    daemon.call("join", room="r")
    with WsConnection(daemon, timeout=10) as watcher, WsConnection(daemon, timeout=10) as ctl:
        watcher.call("subscribe", {"rooms": ["r"]})
        for i in range(200):  # the watcher reads none of these
            daemon.call("send", room="r", text=f"unread {i}")
        assert ctl.call("shutdown") is True
        assert daemon.wait_exit(timeout=20) == 0
    assert not daemon.rpc_path.exists()
