"""The web UI in a real browser: Debian's Chromium driven by Playwright, two daemons.

Each browser context is one user with its own cookie jar, logged in the way a user is:
through the one-time URL of `p2pctl ui --url`. Assertions are about what a person
sees: the texts, the decoded image at its real size, the state after a reload, and
nothing executed from a peer's text. Screenshots go to $GOSSIPCHAT_SCREENSHOTS when
it is set (docs/screenshots/ keeps a few), else to the test's temporary folder.
"""

from __future__ import annotations

import base64
import http.server
import io
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from harness.daemons import Cluster, DaemonProcess, connect, wait_mesh
from harness.system_packages import ensure_apt
from harness.waiting import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    # DNS rebinding, simulated: an attacker's name that resolves to loopback.
    "--host-resolver-rules=MAP rebind.test 127.0.0.1",
]
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = ensure_apt("chromium")
    if reason is not None:
        pytest.skip(reason)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("GOSSIPCHAT_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _login(browser: Browser, daemon: DaemonProcess) -> tuple[BrowserContext, Page]:
    """A fresh user logged in through `p2pctl ui --url`, on the ready page."""
    out = daemon.cli("ui", "--url")
    assert out.returncode == 0, out.stderr
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.goto(out.stdout.strip())
    page.wait_for_selector("body[data-state=ready]", timeout=WAIT_MS)
    return context, page


def _image_file(path: Path, width: int, height: int, seed: int) -> Path:
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height))
    # Stripes of colour with noise: a recognisable picture that does not compress away.
    pixels = bytearray()
    for y in range(height):
        base = (y * 255 // height, 120, 255 - y * 255 // height)
        for _x in range(width):
            pixels += bytes(max(0, min(255, c + rng.randint(-25, 25))) for c in base)
    image.frombytes(bytes(pixels))
    image.save(path, "PNG")
    return path


def _message(page: Page, text: str) -> Any:
    return page.locator("#message-list li.message", has_text=text)


def _setup_pair(cluster: Cluster, room: str) -> tuple[DaemonProcess, DaemonProcess]:
    a, b = cluster.start("alice"), cluster.start("bob")
    connect(a, b)
    a.call("nick", name="alice")
    b.call("nick", name="bob")
    for d in (a, b):
        d.call("join", room=room)
    wait_mesh(a, room, 1)
    wait_mesh(b, room, 1)
    return a, b


def test_two_users_chat_with_text_and_an_image(cluster: Cluster, browser: Browser,
                                               shots: Path, tmp_path: Path) -> None:
    a, b = _setup_pair(cluster, "lobby")
    ctx_a, page_a = _login(browser, a)
    ctx_b, page_b = _login(browser, b)
    try:
        assert page_a.locator("#room-title").text_content() == "#lobby"
        page_a.fill("#text-input", "hello from alice's browser")
        page_a.press("#text-input", "Enter")
        _message(page_a, "hello from alice's browser").wait_for(timeout=WAIT_MS)

        picture = _image_file(tmp_path / "stripes.png", 640, 480, seed=1)
        page_a.fill("#text-input", "a picture for bob")  # the caption
        # Record every state the upload bar goes through, whatever its speed.
        page_a.evaluate("""() => {
            window.uploadStates = [];
            const box = document.getElementById("upload");
            const bar = document.getElementById("upload-progress");
            new MutationObserver(() => window.uploadStates.push([box.hidden, bar.value]))
                .observe(box, {attributes: true, subtree: true});
        }""")
        page_a.set_input_files("#image-input", str(picture))
        _message(page_a, "a picture for bob").wait_for(timeout=WAIT_MS)
        page_a.wait_for_selector("#upload", state="hidden", timeout=WAIT_MS)
        states = page_a.evaluate("window.uploadStates")
        assert any(not hidden for hidden, _ in states), states
        assert max(value for _, value in states) == 1
        assert states[-1][0] is True

        # Bob sees the text and the image: first the thumbnail, then the full image.
        _message(page_b, "hello from alice's browser").wait_for(timeout=WAIT_MS)
        shown = _message(page_b, "a picture for bob")
        shown.wait_for(timeout=WAIT_MS)
        assert shown.locator(".nick").text_content() == "alice"
        assert "stripes.png" in (shown.locator("figcaption").text_content() or "")
        full = shown.locator("img[data-loaded=full]")
        full.wait_for(timeout=WAIT_MS)
        size = full.evaluate(
            "img => img.decode().then(() => [img.naturalWidth, img.naturalHeight])")
        assert size == [640, 480]
        assert full.get_attribute("src", timeout=WAIT_MS) == \
            f"/image/{b.call('history', room='lobby')[-1]['image']['cid']}"
        page_b.screenshot(path=str(shots / "image-received.png"))

        # Bob replies; Alice sees it live.
        page_b.fill("#text-input", "hi alice, bob here. nice stripes!")
        page_b.press("#text-input", "Enter")
        _message(page_a, "hi alice, bob here").wait_for(timeout=WAIT_MS)
        page_b.click("#members-toggle")
        page_b.locator("#member-list li", has_text="alice").wait_for(timeout=WAIT_MS)
        assert "online" in (page_b.locator("#member-list li", has_text="alice")
                            .locator(".seen").text_content() or "")
        page_b.screenshot(path=str(shots / "chat.png"))

        # A reload keeps the state: the room, the history, the image.
        page_b.reload()
        page_b.wait_for_selector("body[data-state=ready]", timeout=WAIT_MS)
        assert page_b.locator("#room-title").text_content() == "#lobby"
        texts = page_b.locator("#message-list li.message .text").all_text_contents()
        assert texts[-3:] == ["hello from alice's browser", "a picture for bob",
                              "hi alice, bob here. nice stripes!"]
        _message(page_b, "a picture for bob").locator("img[data-loaded=full]").wait_for(
            timeout=WAIT_MS)

        # A click opens the full image in a tab of its own, as an image.
        with ctx_b.expect_page() as opened:
            _message(page_b, "a picture for bob").locator("figure a").click()
        tab = opened.value
        tab.wait_for_load_state()
        assert tab.url.endswith(full.get_attribute("src") or "-")
        assert tab.evaluate("() => [document.images[0].naturalWidth, "
                            "document.images[0].naturalHeight]") == [640, 480]
        tab.close()
        response = page_b.request.get(urljoin(page_b.url, full.get_attribute("src") or "-"))
        assert response.status == 200
        assert response.headers["content-type"] == "image/png"
        assert response.body() == picture.read_bytes()
    finally:
        ctx_a.close()
        ctx_b.close()


def test_rooms_unread_counts_nick_paste_drop_and_scroll_back(
        cluster: Cluster, browser: Browser, shots: Path) -> None:
    a, b = _setup_pair(cluster, "lobby")
    b.call("join", room="side")
    a.call("join", room="side")
    wait_mesh(b, "side", 1)
    with a.client() as c:
        for i in range(130):  # more than one page of scroll back
            c.send("lobby", f"old message {i}")
    wait_for(lambda: len(b.call("history", room="lobby", limit=200)) >= 130,
             message="history at bob")
    ctx, page = _login(browser, b)
    try:
        # Unread: alice writes in the room bob is not looking at.
        page.locator("#room-list li[data-room=lobby]").click()
        page.wait_for_function(
            "() => document.body.dataset.rendered !== undefined")
        a.call("send", room="side", text="psst, over here")
        badge = page.locator("#room-list li[data-room=side] .badge")
        badge.wait_for(timeout=WAIT_MS)
        assert badge.text_content() == "1"
        page.screenshot(path=str(shots / "rooms.png"))
        page.locator("#room-list li[data-room=side] button").click()
        _message(page, "psst, over here").wait_for(timeout=WAIT_MS)
        assert page.locator("#room-list li[data-room=side] .badge").count() == 0

        # Join and leave from the page.
        page.fill("#join-input", "fresh")
        page.press("#join-input", "Enter")
        page.locator("#room-title", has_text="#fresh").wait_for(timeout=WAIT_MS)
        assert "fresh" in [r["room"] for r in b.call("rooms")]
        page.click("#leave-button")
        page.wait_for_function(
            "() => !document.querySelector('#room-list li[data-room=fresh]')", timeout=WAIT_MS)
        assert "fresh" not in [r["room"] for r in b.call("rooms")]

        # The nick.
        page.fill("#nick-input", "bobby")
        page.press("#nick-input", "Enter")
        wait_for(lambda: b.call("id")["nick"] == "bobby", message="the nick set")

        # Paste and drop an image: real clipboard and drag events with a File.
        page.locator("#room-list li[data-room=side] button").click()
        page.locator("#room-title", has_text="#side").wait_for(timeout=WAIT_MS)
        png = io.BytesIO()
        Image.new("RGB", (32, 24), (10, 160, 60)).save(png, "PNG")
        data = base64.b64encode(png.getvalue()).decode()
        for event, name in (("paste", "pasted.png"), ("drop", "dropped.png")):
            page.evaluate("""([event, name, data]) => {
                const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], name, {type: "image/png"}));
                const target = event === "paste" ? document : document.getElementById("chat");
                const init = {bubbles: true, cancelable: true};
                target.dispatchEvent(event === "paste"
                    ? new ClipboardEvent("paste", {...init, clipboardData: transfer})
                    : new DragEvent("drop", {...init, dataTransfer: transfer}));
            }""", [event, name, data])
            wait_for(lambda name=name: any(
                m.get("image", {}).get("filename") == name
                for m in a.call("history", room="side")), message=f"the {event}d image at alice")

        # Scroll back: older history loads at the top.
        page.locator("#room-list li[data-room=lobby] button").click()
        page.locator("#room-title", has_text="#lobby").wait_for(timeout=WAIT_MS)
        page.wait_for_function(
            "() => document.body.dataset.rendered === '130'", timeout=WAIT_MS)
        first = page.locator("#message-list li.message .text").first.text_content()
        assert first == "old message 0"
    finally:
        ctx.close()


def test_scroll_back_loads_older_pages(cluster: Cluster, browser: Browser) -> None:
    a = cluster.start("a")
    a.call("join", room="long")
    with a.client() as c:
        for i in range(650):
            c.send("long", f"line {i}")
    ctx, page = _login(browser, a)
    try:
        page.wait_for_function(
            "() => document.body.dataset.rendered === '500'", timeout=WAIT_MS)
        assert page.locator("#message-list li.message").count() == 500
        page.locator("#messages").evaluate("box => { box.scrollTop = 0; }")
        page.wait_for_function(
            "() => document.querySelectorAll('#message-list li.message').length === 600",
            timeout=WAIT_MS)
        page.locator("#messages").evaluate("box => { box.scrollTop = 0; }")
        page.wait_for_function(
            "() => document.querySelectorAll('#message-list li.message').length === 650",
            timeout=WAIT_MS)
        assert page.locator("#message-list li.message .text").first.text_content() == "line 0"
        page.locator("#history-sentinel", has_text="beginning").wait_for(timeout=WAIT_MS)
    finally:
        ctx.close()


def test_text_from_peers_is_never_html(cluster: Cluster, browser: Browser,
                                       shots: Path) -> None:
    a, b = _setup_pair(cluster, "lobby")
    hostile_text = '<img src=x onerror="window.__pwned=1;document.title=\'pwned\'">'
    hostile_caption = '<b id="injected">bold</b><script>window.__pwned=2</script>'
    hostile_name = '"><img src=x onerror=window.__pwned=3>.png'
    a.call("nick", name="<i id='nickhtml'>eve</i>")
    a.call("send", room="lobby", text=hostile_text)
    png = io.BytesIO()
    Image.new("RGB", (40, 30), (90, 90, 200)).save(png, "PNG")
    with a.client() as c:
        c.send_image("lobby", data=png.getvalue(), caption=hostile_caption,
                     filename=hostile_name)
    wait_for(lambda: len(b.call("history", room="lobby")) >= 2, message="the messages at b")
    ctx, page = _login(browser, b)
    try:
        _message(page, "onerror").first.wait_for(timeout=WAIT_MS)
        _message(page, "injected").first.wait_for(timeout=WAIT_MS)
        assert hostile_text in page.locator("#message-list .text").all_text_contents()
        assert hostile_caption in page.locator("#message-list .text").all_text_contents()
        names = page.locator("#message-list .nick").all_text_contents()
        assert "<i id='nickhtml'>eve</i>" in names
        caption = page.locator("#message-list figcaption").first.text_content() or ""
        stored_name = b.call("history", room="lobby")[-1]["image"]["filename"]
        assert caption.startswith(stored_name)
        assert page.evaluate("window.__pwned") is None
        assert page.title() == "gossipchat"
        assert page.locator("#injected, #nickhtml, img[src=x], script:not([src])").count() == 0
        # The author's peer id suffix stands before the nick it chose.
        suffixes = page.locator("#message-list .suffix").all_text_contents()
        assert f"[{a.peer_id[-8:]}]" in suffixes
        page.screenshot(path=str(shots / "html-as-text.png"))
    finally:
        ctx.close()


def test_controls_and_bidi_from_peers_show_as_visible_stand_ins(
        cluster: Cluster, browser: Browser) -> None:
    a, b = _setup_pair(cluster, "lobby")
    spoof = "ok\x1b[8m\u202egnp.exe\u009b2J\nsecond line"
    a.call("send", room="lobby", text=spoof)
    wait_for(lambda: any(m["text"] == spoof for m in b.call("history", room="lobby")),
             message="the message at b")
    ctx, page = _login(browser, b)
    try:
        _message(page, "second line").first.wait_for(timeout=WAIT_MS)
        shown = page.locator("#message-list .text", has_text="second line").first
        text = shown.text_content() or ""
        assert text == "ok\u241b[8m<U+202E>gnp.exe<U+009B>2J\nsecond line"
    finally:
        ctx.close()


class _AttackerPage(http.server.BaseHTTPRequestHandler):
    """A web site the user visits: it tries to reach the UI from its own origin."""

    target = ""

    def do_GET(self) -> None:
        body = f"""<!doctype html><title>attacker</title><script>
        window.results = {{}};
        const ws = new WebSocket("ws://{self.target}/rpc");
        ws.onopen = () => {{
          window.results.ws = "open";
          ws.send('{{"jsonrpc":"2.0","method":"id","id":1}}');
        }};
        ws.onmessage = (e) => {{ window.results.data = e.data; }};
        ws.onerror = () => {{ window.results.ws = window.results.ws || "error"; }};
        ws.onclose = () => {{ window.results.closed = true; }};
        fetch("http://{self.target}/", {{credentials: "include"}})
          .then(r => r.text()).then(t => {{ window.results.fetch = t; }})
          .catch(e => {{ window.results.fetch = "blocked: " + e; }});
        </script>""".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_other_sites_and_rebinding_get_nothing(cluster: Cluster, browser: Browser) -> None:
    daemon = cluster.start("a")
    netloc = daemon.web_url.removeprefix("http://").rstrip("/")
    port = netloc.rsplit(":", 1)[1]
    ctx, page = _login(browser, daemon)  # the user is logged in: the cookie exists
    _AttackerPage.target = netloc
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # Another origin on the same machine (same site for cookies: only the port differs).
        evil = ctx.new_page()
        evil.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        evil.wait_for_function(
            "() => window.results.closed && window.results.fetch",
                               timeout=WAIT_MS)
        results = evil.evaluate("window.results")
        assert results.get("ws") != "open"
        assert "data" not in results
        assert results["fetch"].startswith("blocked")
        # DNS rebinding: an attacker's name resolving to 127.0.0.1 gets a 403.
        rebound = ctx.new_page()
        response = rebound.goto(f"http://rebind.test:{port}/")
        assert response is not None
        assert response.status == 403
        assert "app.js" not in rebound.content()
        # A browser that never logged in gets the login hint only.
        stranger = browser.new_context()
        try:
            visit = stranger.new_page()
            response = visit.goto(daemon.web_url)
            assert response is not None
            assert response.status == 401
            assert "p2pctl ui" in visit.content()
        finally:
            stranger.close()
        # The cookie is HttpOnly: the page's own scripts cannot read it.
        assert page.evaluate("document.cookie") == ""
    finally:
        server.shutdown()
        server.server_close()
        ctx.close()


def test_first_render_of_500_messages_and_the_memory_the_ui_adds(
        cluster: Cluster, browser: Browser) -> None:
    """Measures, does not time-assert: printed for the record (README, bench)."""
    on = cluster.start("on")
    off = cluster.start("off", "--web-listen", "off")
    for daemon in (on, off):
        daemon.call("join", room="big")
        with daemon.client() as c:
            for i in range(500):
                c.send("big", f"message {i}: " + "lorem ipsum dolor sit amet " * 3)
    ctx, page = _login(browser, on)
    try:
        page.wait_for_function(
            "() => document.body.dataset.rendered === '500'", timeout=WAIT_MS)
        first_render_ms = page.evaluate(
            "performance.getEntriesByName('gc-first-render')[0].startTime")
        assert page.locator("#message-list li.message").count() == 500
        rss_on, rss_off = on.rss_kib(), off.rss_kib()
        print(f"\nweb UI: first render of 500 messages {first_render_ms:.0f} ms after "
              f"navigation; daemon RSS with the UI {rss_on / 1024:.1f} MiB (page loaded), "
              f"without {rss_off / 1024:.1f} MiB: +{(rss_on - rss_off) / 1024:.1f} MiB")
        assert first_render_ms > 0
    finally:
        ctx.close()


def test_thumbnail_first_then_the_full_image_fetched_from_the_page(
        cluster: Cluster, browser: Browser, tmp_path: Path) -> None:
    config = tmp_path / "bob.toml"
    # Bob fetches nothing by himself, and gives up on a fetch after 3 s.
    config.write_text("auto_fetch_max = 0\nfetch_timeout_s = 3.0\n")
    a = cluster.start("alice")
    b = cluster.start("bob", "--config", str(config))
    connect(a, b)
    for d in (a, b):
        d.call("join", room="pics")
    wait_mesh(b, "pics", 1)
    picture = _image_file(tmp_path / "big.png", 640, 480, seed=2)
    with a.client() as c:
        posted = c.send_image("pics", picture, caption="fetch me")
    wait_for(lambda: any(m["id"] == posted["id"] for m in b.call("history", room="pics")),
             message="the image message at bob")
    b.call("block", peer=a.peer_id)  # nobody can serve the full image now
    ctx, page = _login(browser, b)
    try:
        shown = _message(page, "fetch me")
        shown.wait_for(timeout=WAIT_MS)
        failed = shown.locator("img[data-loaded=failed]")
        failed.wait_for(timeout=WAIT_MS)
        assert (failed.get_attribute("src") or "").startswith("data:image/jpeg;base64,")
        thumb = failed.evaluate(
            "img => img.decode().then(() => [img.naturalWidth, img.naturalHeight])")
        assert thumb[0] < 640
        assert thumb[0] * 480 == thumb[1] * 640  # the thumbnail keeps the aspect ratio
        b.call("unblock", peer=a.peer_id)
        b.call("connect", addr=a.addr)
        wait_mesh(b, "pics", 1)
        # Right after the reconnection the page's fetch can still fail within bob's
        # 3 s (seen once in CI, 2026-12-07; the cause is not known. One that fits, a
        # late hang-up on the blocked peer closing the fresh connection, is gone since
        # blocked peers are refused at admission). A user reloads; so does the test,
        # up to three times.
        full = _message(page, "fetch me").locator("img[data-loaded=full]")
        settled = _message(page, "fetch me").locator(
            "img[data-loaded=full], img[data-loaded=failed]")
        for _attempt in range(3):
            page.reload()
            page.wait_for_selector("body[data-state=ready]", timeout=WAIT_MS)
            settled.wait_for(timeout=WAIT_MS)
            if settled.get_attribute("data-loaded") == "full":
                break
        full.wait_for(timeout=WAIT_MS)
        assert full.evaluate(
            "img => img.decode().then(() => [img.naturalWidth, img.naturalHeight])") == [640, 480]
        address = f"/image/{b.call('history', room='pics')[-1]['image']['cid']}"
        assert full.get_attribute("src") == address  # fetched by the page
        # Held now: after a reload the page finds it without a fetch, and shows it at
        # the same address (it read back absolute from the probe until 2026-12-07).
        page.reload()
        page.wait_for_selector("body[data-state=ready]", timeout=WAIT_MS)
        held = _message(page, "fetch me").locator("img[data-loaded=full]")
        held.wait_for(timeout=WAIT_MS)
        assert held.get_attribute("src") == address
    finally:
        ctx.close()


def test_the_page_reconnects_after_the_daemon_restarts(cluster: Cluster,
                                                       browser: Browser) -> None:
    import socket

    with socket.socket() as probe:  # a port of our own, so the restart can take it again
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listen = f"127.0.0.1:{port}"
    a = cluster.start("a", "--web-listen", listen)
    a.call("join", room="stay")
    a.call("send", room="stay", text="before the restart")
    ctx, page = _login(browser, a)
    try:
        _message(page, "before the restart").wait_for(timeout=WAIT_MS)
        assert a.terminate() == 0
        page.wait_for_selector("body[data-state=disconnected]", timeout=WAIT_MS)
        again = cluster.start("a", "--web-listen", listen)
        page.wait_for_selector("body[data-state=ready]", timeout=WAIT_MS)
        again.call("send", room="stay", text="after the restart")
        _message(page, "after the restart").wait_for(timeout=WAIT_MS)
        assert page.locator("#conn-state").text_content() == "online"
    finally:
        ctx.close()
