"""The editor's desk against careless editors, hostile readers, link scanners and
attackers: each test is a request that once broke a rule (a traceback for a wrong id, an
edition no editor approved reaching readers, a burst rule one IPv6 host could dodge),
driven through the CLI, the library and real servers on 127.0.0.1, with real stores."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from conftest import NOW, SAMPLE_JSON, Digest, sql
from sqlalchemy import Engine, create_engine, text
from test_admin import Site, add_user, serving, signed_in
from test_clicks import BROWSER, Sent, open_sent, send
from test_desk import _body, _fill, _settings

from digest.audience.clicks import ClickCounter
from digest.clock import FixedClock
from digest.delivery import desk
from digest.delivery.approval import desk_slot, desk_sweep
from digest.errors import InputError
from digest.mail.loopback import LoopbackSMTPServer
from digest.store.articles import remove_articles
from digest.store.db import Store

SUBSCRIBERS = ("email,name,topics,timezone\n"
               "ada@example.org,Ada Lovelace,,Europe/London\n")


@pytest.fixture
def drafted(digest: Digest) -> Digest:
    """A store with the sample articles, one subscriber and edition 1 drafted."""
    digest.ok("articles", "import", str(SAMPLE_JSON))
    (digest.folder / "subs.csv").write_text(SUBSCRIBERS)
    digest.ok("subscribers", "import", "subs.csv")
    digest.ok("editions", "draft")
    return digest


HUGE = "99999999999999999999"          # past 64 bits
WIDE = "3000000000"                    # past 32 bits (PostgreSQL's Integer)


@pytest.mark.both_backends
@pytest.mark.parametrize(("args", "line"), [
    (("editions", "show", HUGE), f"there is no edition {HUGE}"),
    (("editions", "approve", WIDE), f"there is no edition {WIDE}"),
    (("editions", "preview", HUGE), f"there is no edition {HUGE}"),
    (("editions", "discard", HUGE), f"there is no edition {HUGE}"),
    (("editions", "drop", "1", HUGE), f"article {HUGE} is not in edition 1"),
    (("editions", "pin", "1", WIDE), f"article {WIDE} is not in edition 1"),
    (("editions", "order", "1", "3", "--before", HUGE), f"article {HUGE} is not in edition 1"),
])
def test_an_enormous_id_is_one_line_not_a_traceback(drafted: Digest, args: tuple[str, ...],
                                                    line: str) -> None:
    result = drafted(*args)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {line}")
    assert result.output.count("\n") == 1


def test_ordering_an_article_before_itself_is_refused_in_one_line(drafted: Digest) -> None:
    result = drafted("editions", "order", "1", "3", "--before", "3")
    assert result.exit_code == 1
    assert result.output == ("Error: article 3 cannot come before itself; name another "
                             "article of its topic (digest editions show 1)\n")


# --- the scheduler under [schedule] approval = "veto" -----------------------------------

def _readers(smtp: LoopbackSMTPServer) -> list[str]:
    return sorted(r.recipients[0] for r in smtp.received
                  if r.recipients[0] != "editor@example.org")


def test_veto_never_sends_a_draft_the_editors_had_no_time_to_veto(
        store_url: str, smtp: LoopbackSMTPServer) -> None:
    # The scheduler was not running draft_lead before the slot: the draft is made at the
    # slot itself, and its review mail is the first the editors hear of it.
    settings = _settings(store_url, smtp, "veto")
    store = Store.from_settings(settings, FixedClock(NOW))     # the articles come at NOW
    _fill(store, settings)
    slot = NOW + timedelta(days=1)
    outcome = desk_slot(store, settings, slot, slot)
    assert (outcome.action, outcome.edition) == ("held", 1)
    assert _readers(smtp) == []
    review = smtp.received[0].message()
    assert review["Subject"].startswith("[Review] Edition 1: ")
    assert "only once an editor approves it" in _body(review, "plain")
    # Nor at the next slot: it was never drafted for one the editors could veto.
    week = slot + timedelta(days=7)
    assert desk_slot(store, settings, week, week).action == "held"
    assert _readers(smtp) == []
    desk.approve_edition(store, settings, 1, "editor", week + timedelta(minutes=1))
    assert desk_slot(store, settings, week + timedelta(days=7),
                     week + timedelta(days=7)).action == "sent"
    assert _readers(smtp) == ["ada@example.org", "grace@example.org"]
    store.close()


def test_veto_still_sends_a_reviewed_draft_nobody_cancelled(
        store_url: str, smtp: LoopbackSMTPServer) -> None:
    settings = _settings(store_url, smtp, "veto")
    store = Store.from_settings(settings, FixedClock(NOW))     # the articles come at NOW
    _fill(store, settings)
    slot = NOW + timedelta(days=1)
    desk_sweep(store, settings, slot - timedelta(hours=2), slot)
    assert "unless an editor cancels it" in _body(smtp.received[0].message(), "plain")
    assert desk_slot(store, settings, slot, slot).action == "sent"
    assert _readers(smtp) == ["ada@example.org", "grace@example.org"]
    store.close()


# --- the admin pages ----------------------------------------------------------------------

@pytest.fixture
def web(digest: Digest) -> Iterator[Site]:
    """`digest serve` on 127.0.0.1 with one editor who may sign in."""
    add_user(digest)
    with serving(digest) as served:
        yield served


def test_a_subscriber_page_number_of_twenty_digits_is_an_empty_page_not_a_500(
        web: Site) -> None:
    web.digest.ok("subscribers", "add", "ada@example.org")
    with signed_in(web) as client:
        page = client.get("/admin/subscribers?page=99999999999999999999")
        assert page.status_code == 200
        assert "Something went wrong" not in page.text
        assert client.get("/admin/subscribers?page=2147483648").status_code == 200


# --- click counts -------------------------------------------------------------------------

@pytest.fixture
def delivered(digest: Digest, smtp: LoopbackSMTPServer) -> Iterator[Sent]:
    """Edition 1 sent to three readers with click counts on, and the app of its links."""
    send(digest, smtp, 3)
    yield from open_sent(digest, smtp)


@pytest.mark.both_backends
def test_one_ipv6_network_cannot_dodge_the_burst_rule_by_changing_address(
        delivered: Sent) -> None:
    sent = delivered
    # One host holds a whole /64 and may use any address in it (privacy addresses, or on
    # purpose): a scanner changing address at each link is still one client.
    counter = ClickCounter(sent.store, sent.settings)
    at = datetime.now(UTC)
    for n, article in enumerate(sent.articles[:6]):
        counter.follow(sent.link(article).rsplit("/", 1)[1], method="GET",
                       user_agent=BROWSER, address=f"2001:db8:5:7::{n + 1:x}",
                       now=at + timedelta(milliseconds=n))
    counter.flush()
    assert sent.counts() == {}
    assert sent.reasons() == ["burst"] * 6
    # An IPv4 reader seen through an IPv6 socket is the same client as over IPv4.
    for n, (article, address) in enumerate(zip(
            sent.articles[:3], ["192.0.2.8", "::ffff:192.0.2.8", "192.0.2.8"], strict=True)):
        counter.follow(sent.link(article).rsplit("/", 1)[1], method="GET",
                       user_agent=BROWSER, address=address,
                       now=at + timedelta(minutes=5, milliseconds=n))
    counter.flush()
    assert sent.counts() == {}
    assert sent.reasons() == ["burst"] * 9
    # Readers in other networks still count.
    counter.follow(sent.link(sent.articles[0]).rsplit("/", 1)[1], method="GET",
                   user_agent=BROWSER, address="2001:db8:6::1", now=at + timedelta(minutes=9))
    counter.close()
    assert sent.counts() == {sent.articles[0]: 1}


# --- two processes at once ----------------------------------------------------------------

def _waiting(engine: Engine, count: int) -> None:
    """Wait until count other sessions of the database wait for a lock."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            waiting = conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")).scalar()
        if waiting == count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} sessions never came to wait for a lock")


@pytest.mark.both_backends
def test_removing_an_article_while_it_is_drafted_never_leaves_it_in_the_mail(
        store_url: str, smtp: LoopbackSMTPServer) -> None:
    # PostgreSQL runs the two side by side: `digest articles remove 3` reads article 3 as
    # in no edition, a draft takes it and commits, then the removal lands. SQLite runs
    # writers one after the other, so it cannot meet this.
    if not store_url.startswith("postgresql"):
        pytest.skip("SQLite runs one writer at a time")
    settings = _settings(store_url, smtp, "none")
    store = Store.from_settings(settings)
    _fill(store, settings)
    engine = create_engine(store_url)
    outcomes: dict[str, object] = {}

    def run(name: str, work: Callable[[], object]) -> threading.Thread:
        def target() -> None:
            try:
                outcomes[name] = work()
            except Exception as exc:  # noqa: BLE001  (what each one met is the result)
                outcomes[name] = exc
        thread = threading.Thread(target=target)
        thread.start()
        return thread

    try:
        with engine.connect() as holder:
            holder.execute(text("SELECT id FROM articles WHERE id = 3 FOR UPDATE"))
            drafting = run("draft", lambda: desk.draft_edition(store, settings,
                                                               datetime.now(UTC)))
            _waiting(engine, 1)
            removing = run("remove", lambda: remove_articles(store, [3]))
            _waiting(engine, 2)
            holder.rollback()
        drafting.join(20)
        removing.join(20)
    finally:
        engine.dispose()
    assert not isinstance(outcomes["draft"], Exception), outcomes["draft"]
    assert isinstance(outcomes["remove"], InputError)
    assert "article 3 is in edition 1" in str(outcomes["remove"])
    assert 3 in [a.id for a in desk.desk_view(store, settings, 1).articles]
    store.close()


def test_retopic_since_leaves_an_approved_edition_as_it_was_approved(drafted: Digest) -> None:
    d = drafted
    d.ok("editions", "approve", "1")
    before = json.loads(d.ok("editions", "show", "1", "--format", "json").output)
    config = d.folder / "digest.toml"
    config.write_text(config.read_text().replace('method = "semantic"', 'method = "keywords"')
                      .replace('name = "AI"', 'name = "Machines"', 1))
    d.ok("articles", "retopic", "--since", "2000-01-01")
    after = json.loads(d.ok("editions", "show", "1", "--format", "json").output)
    assert after["status"] == "approved"
    assert {a["id"]: a["topic"] for a in after["articles"]} == \
        {a["id"]: a["topic"] for a in before["articles"]}


def test_send_edition_n_names_that_edition_with_workers_too(drafted: Digest) -> None:
    # With [delivery] workers, `digest send` only writes the ledger; --edition N must still
    # mean N: a cancelled edition is never sent, and no other edition is made instead.
    d = drafted
    workers = {"DIGEST_DELIVERY__WORKERS": "true"}
    d.ok("editions", "cancel", "1")
    result = d("send", "--edition", "1", "--yes", env=workers)
    assert (result.exit_code, result.output) == (
        1, "Error: edition 1 was cancelled: it is never sent\n")
    assert sql(d.folder, "select number, status from editions") == [(1, "cancelled")]
    assert sql(d.folder, "select count(*) from deliveries") == [(0,)]
