"""Feeds are never fetched from internal addresses (loopback, private, link-local, cloud
metadata...) unless [fetch] allow_private says so: a feed that redirects to one could
otherwise make an internal page an article, in the preview, the mail and the archive.

These tests run with the default config (refusing), except where they say otherwise; the
servers are real, on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import Digest
from test_feeds import feeds_json

from digest.config import load_settings
from digest.ingest.addresses import AddressRefused, address_refusal, resolve_checked
from digest.ingest.feeds import FeedBook, read_feed
from digest.store.db import Store

SECRET = b"AKIA-internal-credentials"
HINT = "set [fetch] allow_private = true for intranet feeds"


def rss(title: str, text: str) -> bytes:
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>{title}</title>'
            f"<link>https://example.org/</link><item><title>{title} story</title>"
            f"<link>https://example.org/{title}</link><description>{text}</description>"
            f"</item></channel></rss>").encode()


class Internal:
    """A server on 127.0.0.1 the way an internal service looks: it answers anyone, with
    a feed whose text is a secret; /to/<url> redirects there. Records every path asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.asked.append(self.path)
                if self.path.startswith("/to/"):
                    self.send_response(302)
                    self.send_header("Location", self.path[len("/to/"):])
                    body = b""
                else:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/xml")
                    body = rss("Internal", SECRET.decode())
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def internal() -> Iterator[Internal]:
    server = Internal()
    yield server
    server.stop()


# --- the classifier ---------------------------------------------------------------------

@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "a loopback address"),
    ("127.255.0.9", "a loopback address"),
    ("::1", "a loopback address"),
    ("10.0.0.1", "a private address"),
    ("172.16.5.4", "a private address"),
    ("172.31.255.255", "a private address"),
    ("192.168.1.1", "a private address"),
    ("fc00::1", "a private address"),
    ("fd12:3456::1", "a private address"),
    ("169.254.1.1", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("169.254.169.254", "a cloud metadata address"),
    ("fd00:ec2::254", "a cloud metadata address"),
    ("224.0.0.1", "a multicast address"),
    ("239.255.255.250", "a multicast address"),
    ("ff02::1", "a multicast address"),
    ("0.0.0.0", "an unspecified address"),
    ("::", "an unspecified address"),
    ("100.64.0.1", "a shared (carrier-grade NAT) address"),
    ("100.127.255.254", "a shared (carrier-grade NAT) address"),
    ("fec0::1", "a site-local address"),
    ("240.0.0.1", "a reserved address"),
    ("255.255.255.255", "a reserved address"),
    ("192.0.2.1", "a reserved address"),
    ("0.1.2.3", "a reserved address"),
    # IPv6 forms of IPv4 addresses are judged by the IPv4 address they stand for.
    ("::ffff:127.0.0.1", "a loopback address"),
    ("::ffff:7f00:1", "a loopback address"),
    ("::ffff:10.1.1.1", "a private address"),
    ("::ffff:169.254.169.254", "a cloud metadata address"),
    ("64:ff9b::a00:1", "a private address"),
    ("2002:7f00:1::", "a loopback address"),
    # Public addresses.
    ("93.184.215.14", None),
    ("8.8.8.8", None),
    ("172.32.0.1", None),
    ("2606:4700::1111", None),
    ("::ffff:8.8.8.8", None),
    ("64:ff9b::808:808", None),
])
def test_the_address_classifier(address: str, kind: str | None) -> None:
    assert address_refusal(ipaddress.ip_address(address)) == kind
    # The opt-in lets every internal address through, but never the metadata service.
    expected = kind if kind == "a cloud metadata address" else None
    assert address_refusal(ipaddress.ip_address(address), allow_private=True) == expected


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://[::1]/", "http://[::ffff:127.0.0.1]/",
    "http://2130706433/", "http://0x7f.1/", "http://0x7f000001/", "http://017700000001/",
    "http://0177.1/", "http://127.1/", "http://localhost/", "http://LOCALHOST./",
    "http://0/", "http://[::]/",
])
def test_every_spelling_of_this_machine_is_refused(url: str) -> None:
    host = httpx.URL(url).raw_host.decode("ascii")
    with pytest.raises(AddressRefused, match=HINT.replace("[", r"\[").replace("]", r"\]")):
        resolve_checked(host, 80)
    assert resolve_checked(host, 80, allow_private=True)


def test_metadata_names_are_refused_even_with_the_opt_in() -> None:
    with pytest.raises(AddressRefused) as refused:
        resolve_checked("metadata.google.internal", 80, allow_private=True)
    assert str(refused.value) == ("metadata.google.internal is a cloud metadata service "
                                  "name; no feed is fetched from it")


# --- fetching -----------------------------------------------------------------------------

class PublicInternet(httpx.BaseTransport):
    """The world outside, as far as a test can have it: feed.example answers from memory
    with a redirect to the address its path names; every other address is fetched for
    real, through digest's own transport (`outside`)."""

    def __init__(self, outside: httpx.BaseTransport) -> None:
        self.outside = outside

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "feed.example":
            target = request.url.path.removeprefix("/to/")
            return httpx.Response(302, headers={"Location": target})
        return self.outside.handle_request(request)

    def close(self) -> None:
        self.outside.close()


def test_a_public_feed_redirecting_inside_is_refused(digest: Digest, internal: Internal,
                                                     tmp_path: Path) -> None:
    from digest.ingest.addresses import guarded_transport

    targets = {
        "loopback": (f"{internal.base}/latest/meta-data/",
                     f"127.0.0.1 is a loopback address; {HINT}"),
        "localhost": (f"http://localhost:{internal.port}/latest/meta-data/",
                      f"localhost resolves to 127.0.0.1, a loopback address; {HINT}"),
        "decimal": (f"http://2130706433:{internal.port}/",
                    f"2130706433 resolves to 127.0.0.1, a loopback address; {HINT}"),
        "ipv6": (f"http://[::1]:{internal.port}/", f"::1 is a loopback address; {HINT}"),
        "mapped": (f"http://[::ffff:127.0.0.1]:{internal.port}/",
                   f"::ffff:127.0.0.1 is a loopback address; {HINT}"),
        "metadata": ("http://169.254.169.254/latest/meta-data/iam/",
                     "169.254.169.254 is a cloud metadata address; no feed is fetched "
                     "from it"),
        "private": ("http://10.0.0.1/feed.xml", f"10.0.0.1 is a private address; {HINT}"),
    }
    settings = load_settings(tmp_path / "digest.toml", environ={})
    assert settings.fetch.allow_private is False          # the default
    store = Store.from_settings(settings)
    try:
        book = FeedBook(store, settings, PublicInternet(guarded_transport()))
        for name, (target, _) in targets.items():
            book.add(f"https://feed.example/to/{target}", name)
        results = {r.name: r for r in book.fetch()}
    finally:
        store.close()
    assert {name: r.status for name, r in results.items()} == dict.fromkeys(targets, "error")
    feeds = feeds_json(digest)
    for name, (target, why) in targets.items():
        assert feeds[name]["last_error"] == \
            f"https://feed.example/to/{target}: refused {target}: {why}"
    assert internal.asked == []                  # nothing inside was even asked
    assert json.loads(digest.ok("articles", "list", "--format", "json").stdout) == []


def test_read_feed_refuses_each_hop_not_only_the_first(internal: Internal, tmp_path: Path
                                                        ) -> None:
    """With the opt-in the feed's own server (127.0.0.1) is fine, but a redirect from it
    to the metadata service is refused all the same: every hop is checked."""
    from digest.ingest.addresses import guarded_transport

    settings = load_settings(None, environ={"DIGEST_FETCH__ALLOW_PRIVATE": "true"}).fetch
    with httpx.Client(transport=guarded_transport(allow_private=True)) as client:
        fine = read_feed(client, f"{internal.base}/feed.xml", settings)
        assert fine.failure is None and fine.title == "Internal"
        url = f"{internal.base}/to/http://169.254.169.254/latest/meta-data/"
        read = read_feed(client, url, settings)
    assert read.error == (f"{url}: refused http://169.254.169.254/latest/meta-data/: "
                          f"169.254.169.254 is a cloud metadata address; no feed is "
                          f"fetched from it")
    assert read.records == []


# --- the command line -------------------------------------------------------------------

def test_feeds_add_refuses_an_internal_address(digest: Digest, internal: Internal) -> None:
    for url in (f"{internal.base}/feed.xml", f"http://0x7f.1:{internal.port}/feed.xml"):
        for name in ((), ("--name", "Inside")):
            result = digest("feeds", "add", url, *name)
            host = "127.0.0.1 is" if "127.0.0.1" in url else "0x7f.1 resolves to 127.0.0.1,"
            assert result.exit_code == 1
            assert result.output == f"Error: refused {url}: {host} a loopback address; " \
                                    f"{HINT}\n"
    assert internal.asked == []
    assert feeds_json(digest) == {}


def test_a_listed_internal_feed_is_refused_at_fetch(digest: Digest, internal: Internal) -> None:
    """A feed added while the opt-in was on (or before there was a check) is refused
    when fetched without it: one line in the output and in its health, nothing stored."""
    url = f"{internal.base}/feed.xml"
    opt_in = {"DIGEST_FETCH__ALLOW_PRIVATE": "true"}
    digest.ok("feeds", "add", url, env=opt_in)
    internal.asked.clear()
    result = digest("feeds", "fetch")
    why = f"refused {url}: 127.0.0.1 is a loopback address; {HINT}"
    assert result.exit_code == 1                  # the only feed failed
    assert "Traceback" not in result.output
    assert f"error: Internal: {url}: {why}" in " ".join(result.stderr.split())
    assert feeds_json(digest)["Internal"]["last_error"] == f"{url}: {why}"
    assert internal.asked == []
    assert SECRET.decode() not in digest.ok("articles", "list", "--format", "json").stdout
    # The opt-in is what an intranet's feeds need.
    digest.ok("feeds", "fetch", env=opt_in)
    assert feeds_json(digest)["Internal"]["last_status"] == "added 1"
