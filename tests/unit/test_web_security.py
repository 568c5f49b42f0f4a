"""The web UI's pure security checks, login tickets and web_listen parsing."""

from __future__ import annotations

import pytest

from gossipchat.daemon.config import ConfigError, load
from gossipchat.daemon.web import security
from gossipchat.daemon.web.listen import WebListenError, parse_web_listen
from gossipchat.rpc import weblogin


@pytest.mark.parametrize("host", [
    "localhost", "localhost:4180", "LOCALHOST:80", "localhost.", "127.0.0.1", "127.0.0.1:4180",
    "127.3.4.5:9", "[::1]", "[::1]:4180",
])
def test_loopback_hosts_pass(host: str) -> None:
    assert security.host_allowed(host)


@pytest.mark.parametrize("host", [
    None, "", "evil.example", "evil.example:4180", "localhost.evil.example",
    "127.0.0.1.nip.io", "192.168.1.10:4180", "10.0.0.1", "0.0.0.0:4180", "[::]:4180",
    "[2001:db8::1]:4180", "localhost:99999", "localhost:abc", "127.0.0.1 :4180",
])
def test_other_hosts_fail(host: str | None) -> None:
    assert not security.host_allowed(host)


def test_origin_must_be_our_own() -> None:
    assert security.origin_allowed(None, "127.0.0.1:4180")
    assert security.origin_allowed("http://127.0.0.1:4180", "127.0.0.1:4180")
    assert security.origin_allowed("http://LOCALHOST:4180", "localhost:4180")
    for foreign in ("http://evil.example", "null", "http://127.0.0.1:4181",
                    "https://127.0.0.1:4180", "http://localhost:4180", "file://"):
        assert not security.origin_allowed(foreign, "127.0.0.1:4180"), foreign


def test_token_only_from_bearer_or_the_named_cookie() -> None:
    assert security.bearer_token("Bearer abc") == "abc"
    assert security.bearer_token("bearer abc ") == "abc"
    for wrong in (None, "", "abc", "Basic abc", "Token abc", "Bearer "):
        assert security.bearer_token(wrong) is None
    name = security.cookie_name(4180)
    assert security.cookie_token(f"a=1; {name}=tok", name) == "tok"
    assert security.cookie_token("gossipchat-4181=tok", name) is None
    assert security.cookie_token("token=tok", name) is None
    assert security.token_ok("tok", "tok")
    assert not security.token_ok("tok2", "tok")
    assert not security.token_ok(None, "tok")


@pytest.mark.parametrize(("data", "mime"), [
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "image/png"),
    (b"\xff\xd8\xff\xe0" + b"\0" * 20, "image/jpeg"),
    (b"GIF89a" + b"\0" * 20, "image/gif"),
    (b"GIF87a" + b"\0" * 20, "image/gif"),
    (b"RIFF\x10\0\0\0WEBPVP8 ", "image/webp"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", None),
    (b"<!doctype html><script>alert(1)</script>", None),
    (b"<?xml version='1.0'?><svg/>", None),
    (b"RIFF\x10\0\0\0WAVEfmt ", None),
    (b"", None),
])
def test_image_mime_from_magic_bytes_only(data: bytes, mime: str | None) -> None:
    assert security.image_mime(data) == mime


def test_every_csp_keeps_to_self_and_no_frames() -> None:
    for csp in (security.PAGE_CSP, security.IMAGE_CSP):
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
    assert "sandbox" in security.IMAGE_CSP


def test_tickets_are_genuine_unexpired_and_bound_to_the_token() -> None:
    token = weblogin.new_token()
    ticket = weblogin.make_ticket(token, 1_000_000)
    checked = weblogin.check_ticket(token, ticket, 1_000_010)
    assert checked is not None
    _nonce, expiry = checked
    assert expiry == 1_000_000 + weblogin.TICKET_LIFETIME_S
    assert weblogin.check_ticket(token, ticket, expiry + 1) is None
    assert weblogin.check_ticket(weblogin.new_token(), ticket, 1_000_010) is None
    assert weblogin.check_ticket(token, token, 1_000_010) is None
    tampered = ticket.replace(str(expiry), str(expiry + 1000))
    assert weblogin.check_ticket(token, tampered, 1_000_010) is None
    assert token not in weblogin.login_url("http://127.0.0.1:4180/", ticket)
    assert weblogin.login_url("http://127.0.0.1:4180/", ticket) == \
        f"http://127.0.0.1:4180/login?ticket={ticket}"


def test_web_listen_is_loopback_or_off() -> None:
    assert parse_web_listen("off") is None
    assert parse_web_listen("127.0.0.1:4180") == ("127.0.0.1", 4180)
    assert parse_web_listen("localhost:0") == ("127.0.0.1", 0)
    assert parse_web_listen("[::1]:8080") == ("::1", 8080)
    for bad in ("0.0.0.0:4180", "192.168.1.2:80", "example.com:80", "127.0.0.1", ":80",
                "127.0.0.1:70000", "[::]:80"):
        with pytest.raises(WebListenError):
            parse_web_listen(bad)


def test_config_refuses_a_web_listen_off_loopback(tmp_path) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text('web_listen = "0.0.0.0:4180"\n')
    with pytest.raises(ConfigError, match="loopback"):
        load(config_file, {"home": tmp_path})
    config = load(None, {"home": tmp_path, "web_listen": "off"})
    assert config.web_listen == "off"
    assert load(None, {"home": tmp_path}).web_listen_is_default
