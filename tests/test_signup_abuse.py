"""The public sign-up form is no weapon: mail it sends is capped per mailbox, per hour and
by the outbox's size, whoever asks and from however many addresses; the per-client limit
takes an IPv6 client by its /64; a second sign-up changes nobody's record; every case
does the same work; and `digest serve` warns when X-Forwarded-For is trusted from anyone."""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from conftest import HTTP_TIMEOUT, Digest, smtp_env, sql
from flask.testing import FlaskClient
from sqlalchemy import event
from test_web import SECRET, Site, a_site, csrf_form

from digest.config import load_settings
from digest.mail.loopback import LoopbackSMTPServer
from digest.store.db import Store
from digest.web.app import create_app


def sign_up_from(client: httpx.Client, client_address: str, email: str,
                 **fields: Any) -> int:
    """A sign-up through a trusted proxy that says the visitor is client_address."""
    token = csrf_form(client, "/subscribe")
    return client.post("/subscribe", headers={"X-Forwarded-For": client_address},
                       data={"csrf_token": token, "email": email, **fields}).status_code


@contextmanager
def proxied_site(digest: Digest, smtp: LoopbackSMTPServer, **extra: str) -> Iterator[Site]:
    with a_site(digest, smtp, DIGEST_SECRET_KEY=SECRET, DIGEST_WEB__TRUSTED_PROXIES="1",
                **extra) as site:
        yield site


@pytest.mark.both_backends
def test_forty_clients_get_one_victim_one_mail_a_day(
        digest: Digest, smtp: LoopbackSMTPServer, caplog: pytest.LogCaptureFixture) -> None:
    variants = ["victim@gmail.com", "victim+1@gmail.com", "v.ictim@gmail.com",
                "V.I.C.T.I.M+news@googlemail.com"]
    with caplog.at_level(logging.INFO), proxied_site(digest, smtp) as site, \
            httpx.Client(base_url=site.base, timeout=HTTP_TIMEOUT) as client:
        codes = [sign_up_from(client, f"203.0.113.{i}", variants[i % len(variants)])
                 for i in range(40)]
        # Dots are part of the mailbox where the provider does not say otherwise.
        codes += [sign_up_from(client, f"198.51.100.{i}", address)
                  for i, address in enumerate(["victim@example.org", "v.ictim@example.org",
                                               "victim+x@example.org"])]
        site.sent_mail()
    assert codes == [200] * 43
    assert sorted(m.recipients[0] for m in smtp.received) == [
        "v.ictim@example.org", "victim@example.org", "victim@gmail.com"]
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("digest"))
    assert "the per-mailbox cap is reached" in ours
    assert "victim" not in ours.lower()


def test_an_active_subscribers_fifty_sign_ups_queue_one_mail(
        digest: Digest, smtp: LoopbackSMTPServer) -> None:
    digest.ok("subscribers", "add", "reader@example.org")
    with proxied_site(digest, smtp) as site, \
            httpx.Client(base_url=site.base, timeout=HTTP_TIMEOUT) as client:
        codes = [sign_up_from(client, f"203.0.113.{i}", "reader@example.org")
                 for i in range(50)]
        site.sent_mail()
    assert codes == [200] * 50
    [mail] = smtp.received
    assert mail.message()["Subject"] == "You are already subscribed to The Weekly Digest"


def test_the_caps_answer_like_any_sign_up(digest: Digest, smtp: LoopbackSMTPServer) -> None:
    with proxied_site(digest, smtp) as site, \
            httpx.Client(base_url=site.base, timeout=HTTP_TIMEOUT) as client:
        pages = []
        for i in range(2):
            token = csrf_form(client, "/subscribe")
            pages.append(client.post("/subscribe", headers={"X-Forwarded-For": f"10.0.0.{i}"},
                                     data={"csrf_token": token,
                                           "email": "ada@example.org"}).text)
    assert pages[0] == pages[1]


def test_ipv6_clients_of_one_64_share_a_bucket(digest: Digest,
                                               smtp: LoopbackSMTPServer) -> None:
    with proxied_site(digest, smtp) as site, \
            httpx.Client(base_url=site.base, timeout=HTTP_TIMEOUT) as client:
        codes = [sign_up_from(client, f"2001:db8:1:2::{i + 1:x}", f"r{i}@example.org")
                 for i in range(6)]
        other = sign_up_from(client, "2001:db8:1:3::1", "s@example.org")
    assert codes == [200] * 5 + [429]
    assert other == 200


@pytest.mark.both_backends
def test_the_outbox_bound_holds(digest: Digest,
                                                   smtp: LoopbackSMTPServer) -> None:
    # The SMTP server defers everything: the outbox fills.
    smtp.reply_policy = lambda phase, _from, _rcpt: "451 4.3.0 try again later" \
        if phase == "RCPT" else None
    with proxied_site(digest, smtp, DIGEST_WEB__SIGNUP_OUTBOX_LIMIT="3") as site, \
            httpx.Client(base_url=site.base, timeout=HTTP_TIMEOUT) as client:
        codes = [sign_up_from(client, f"203.0.113.{i}", f"r{i}@example.org")
                 for i in range(6)]
        site.sent_mail()
    assert codes == [200] * 6
    assert sql(digest.folder, "SELECT count(*) FROM outbox") == [(3,)]



def test_the_hourly_cap_holds(digest: Digest, smtp: LoopbackSMTPServer) -> None:
    with proxied_site(digest, smtp, DIGEST_WEB__SIGNUP_MAILS_PER_HOUR="2") as site, \
            httpx.Client(base_url=site.base, timeout=HTTP_TIMEOUT) as client:
        codes = [sign_up_from(client, f"198.51.100.{i}", f"h{i}@example.org")
                 for i in range(4)]
        site.sent_mail()
    assert codes == [200] * 4
    assert sorted(m.recipients[0] for m in smtp.received) == ["h0@example.org",
                                                              "h1@example.org"]


@pytest.mark.both_backends
def test_a_second_sign_up_keeps_the_pending_record(digest: Digest,
                                                    smtp: LoopbackSMTPServer) -> None:
    with proxied_site(digest, smtp) as site, \
            httpx.Client(base_url=site.base, timeout=HTTP_TIMEOUT) as client:
        assert sign_up_from(client, "203.0.113.1", "ada@example.org", name="Ada",
                            topics=["AI"]) == 200
        assert sign_up_from(client, "198.51.100.9", "ada@example.org",
                            name="https://evil.example", topics=["Science"]) == 200
    [(status, name, topics, consent_ip)] = sql(
        digest.folder, "SELECT status, name, topics, consent_ip FROM subscribers")
    # A JSON column: text on SQLite, a list on PostgreSQL.
    assert (status, name, consent_ip) == ("pending", "Ada", "203.0.113.1")
    assert (json.loads(topics) if isinstance(topics, str) else topics) == ["AI"]


# --- the same work whatever the address was ------------------------------------------------

def _sign_up_statements(client: FlaskClient, store: Store, email: str) -> list[str]:
    page = client.get("/subscribe").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        response = client.post("/subscribe", data={"csrf_token": token, "email": email})
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    assert response.status_code == 200
    return seen


def test_every_kind_of_address_costs_the_same_statements(
        digest: Digest, smtp: LoopbackSMTPServer) -> None:
    digest.ok("subscribers", "add", "active@example.org")
    digest.ok("suppressions", "add", "--reason", "complained", "complained@example.org")
    digest.ok("suppressions", "add", "--reason", "bounced", "bounced@example.org")
    env = smtp_env(smtp, DIGEST_SECRET_KEY=SECRET)
    settings = load_settings(digest.folder / "digest.toml", environ=env)
    store = Store.from_settings(settings, digest.clock)
    try:
        app = create_app(settings, store)
        with app.test_client() as client:
            _sign_up_statements(client, store, "pending@example.org")
            runs = {}
            for i, email in enumerate(["new@example.org", "pending@example.org",
                                       "active@example.org", "complained@example.org",
                                       "bounced@example.org"]):
                client.environ_base["REMOTE_ADDR"] = f"203.0.113.{i}"
                runs[email] = _sign_up_statements(client, store, email)
    finally:
        store.close()
    first = runs["new@example.org"]
    assert any(s.startswith("INSERT INTO outbox") for s in first)
    for email, statements in runs.items():
        assert statements == first, email


# --- the serve warning ----------------------------------------------------------------------

def test_serve_warns_when_proxies_are_trusted_on_a_public_address(digest: Digest) -> None:
    # An address that is not this machine's: the warning comes first, then the server
    # cannot listen (nothing is ever exposed).
    result = digest("serve", "--host", "192.0.2.1", "--port", "9",
                    env={"DIGEST_WEB__TRUSTED_PROXIES": "1", "DIGEST_SECRET_KEY": SECRET})
    assert result.exit_code == 1
    warnings = [line for line in result.output.splitlines() if "Warning" in line]
    assert warnings == [
        "Warning: [web] trusted_proxies = 1 trusts X-Forwarded-For, but --host 192.0.2.1 "
        "lets clients reach digest directly and choose their own address: bind to --host "
        "127.0.0.1 behind the proxy, or set trusted_proxies = 0"]
    # Bound to loopback behind the proxy: no warning (a port in use ends it at once).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        loopback = digest("serve", "--host", "127.0.0.1", "--port",
                          str(taken.getsockname()[1]),
                          env={"DIGEST_WEB__TRUSTED_PROXIES": "1", "DIGEST_SECRET_KEY": SECRET})
    assert loopback.exit_code == 1 and "cannot listen" in loopback.output
    assert "Warning" not in loopback.output
