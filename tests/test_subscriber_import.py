"""Subscriber import at scale: a bounded number of statements per batch of rows (never per
row), SQLite's write lock released between batches, an import cut short that a second run
completes, and removed people of older stores found by equality on an indexed column."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE_WEEK, Digest, sql
from sqlalchemy import event, text

from digest.audience.subscribers import IMPORT_BATCH, SubscriberBook
from digest.clock import FixedClock
from digest.config import load_settings
from digest.store.db import Store, open_engine, upgrade_schema
from digest.store.models import SubscriberStatus


@pytest.fixture
def book(digest: Digest, tmp_path: Path) -> Iterator[SubscriberBook]:
    """The subscriber list of the digest fixture's store, as a program embedding it has."""
    settings = load_settings(tmp_path / "digest.toml", environ={})
    store = Store.from_settings(settings, FixedClock(SAMPLE_WEEK))
    yield SubscriberBook(store, settings)
    store.close()


def people(prefix: str, count: int, extra: str = "") -> io.StringIO:
    """A CSV file of count addresses, every fifth of them unsubscribed (on the suppression
    list, once imported)."""
    rows = "".join(f"{prefix}{i}@example.org,{prefix.title()} {i}{extra},AI;Science,"
                   f"{'unsubscribed' if i % 5 == 0 else 'active'}\n" for i in range(count))
    return io.StringIO("email,name,topics,status\n" + rows)


def statements_of(book: SubscriberBook, source: io.StringIO) -> int:
    """How many SQL statements importing source sends to the store."""
    sent: list[str] = []

    def count(*args: Any) -> None:
        sent.append(args[2])

    event.listen(book.store.engine, "before_cursor_execute", count)
    try:
        book.import_csv(source)
    finally:
        event.remove(book.store.engine, "before_cursor_execute", count)
    return len(sent)


@pytest.mark.both_backends
def test_an_import_sends_statements_per_batch_not_per_row(book: SubscriberBook) -> None:
    """Every kind of row (new, suppressed, unsubscribed, an existing subscriber renamed,
    unsubscribed or kept unsubscribed) in a file of 100 rows and in one of 3,000: the
    statements grow with the number of batches of IMPORT_BATCH rows, not with rows."""
    for size, prefix in ((100, "small"), (3000, "large")):
        book.import_csv(people(prefix, size // 2))       # half of them are there already
        book.set_status(f"{prefix}1@example.org", SubscriberStatus.UNSUBSCRIBED)
    small = statements_of(book, people("small", 100, " renamed"))
    large = statements_of(book, people("large", 3000, " renamed"))
    assert small < 30
    assert large <= 3000 // IMPORT_BATCH * small
    stored = {s.email: (s.name, s.status.value) for s in book.subscribers()}
    assert stored["large2999@example.org"] == ("Large 2999 renamed", "active")
    assert stored["large5@example.org"] == ("Large 5 renamed", "unsubscribed")
    assert stored["large1@example.org"] == ("Large 1 renamed", "unsubscribed")
    assert {"large0@example.org", "large2995@example.org"} <= book.suppressed_keys()


@pytest.mark.both_backends
def test_others_write_between_batches_and_the_import_sees_it(book: SubscriberBook,
                                                              tmp_path: Path) -> None:
    """Between two batches another process's one-click unsubscribe goes through at once
    (on SQLite the import holds no write lock then), and a later batch of the same import
    leaves that subscriber unsubscribed, though the file says active."""
    book.import_csv(people("reader", 2500))
    other_settings = load_settings(tmp_path / "digest.toml", environ={})
    other = SubscriberBook(Store.from_settings(other_settings, FixedClock(SAMPLE_WEEK)),
                           other_settings)
    last = next(s for s in book.subscribers() if s.email == "reader2499@example.org")
    renamed_at_first_commit: list[int] = []

    def unsubscribe_meanwhile(_session: Any) -> None:
        if not renamed_at_first_commit:
            renamed_at_first_commit.append(sql(tmp_path, "select count(*) from subscribers "
                                                         "where name like '% renamed'")[0][0])
            other.unsubscribe(last.id, one_click=True)

    event.listen(book.store.writes, "after_commit", unsubscribe_meanwhile)
    try:
        report = book.import_csv(people("reader", 2500, " renamed"))
    finally:
        event.remove(book.store.writes, "after_commit", unsubscribe_meanwhile)
        other.store.close()
    assert 0 < renamed_at_first_commit[0] < 2000
    assert [n for n in report.notes if "reader2499@" in n] == [
        "<stdin>:2501: reader2499@example.org is unsubscribed here and stays so "
        "(re-activate with their consent: --reactivate)",
        "<stdin>:2501: updated reader2499@example.org: name 'Reader 2499' → "
        "'Reader 2499 renamed'"]
    stored = {s.email: (s.name, s.status.value) for s in book.subscribers()}
    assert stored["reader2499@example.org"] == ("Reader 2499 renamed", "unsubscribed")


class PowerCut(Exception):
    pass


def test_an_import_cut_short_keeps_its_batches_and_a_second_run_completes_it(
        book: SubscriberBook, digest: Digest, tmp_path: Path) -> None:
    def cut(_session: Any) -> None:
        raise PowerCut

    event.listen(book.store.writes, "after_commit", cut)
    with pytest.raises(PowerCut):
        book.import_csv(people("reader", 1500))
    event.remove(book.store.writes, "after_commit", cut)
    assert sql(tmp_path, "select count(*) from subscribers") == [(IMPORT_BATCH,)]
    (tmp_path / "people.csv").write_text(people("reader", 1500).getvalue())
    result = digest.ok("subscribers", "import", "people.csv")
    assert result.stdout == (f"Imported {1500 - IMPORT_BATCH} new subscribers, updated 0, "
                             f"unchanged {IMPORT_BATCH}, rejected 0.\n")
    assert sql(tmp_path, "select count(*) from subscribers") == [(1500,)]
    assert sql(tmp_path, "select count(*) from suppressions") == [(300,)]


@pytest.mark.both_backends
def test_people_removed_by_an_older_store_are_still_refused(store_url: str,
                                                            tmp_path: Path) -> None:
    """Before the suppression list, a removed subscriber's row kept only a hash of the
    address in its email_key ("removed:HASH:ID"); the upgrade moves the hash to a column
    of its own, which import and add look up by equality."""
    engine = open_engine(store_url)
    upgrade_schema(engine, "0008")
    digest_hash = hashlib.sha256(b"gone@example.org").hexdigest()[:40]
    with engine.begin() as conn:
        conn.execute(text(
            "insert into subscribers (email, email_key, name, status, topics, token_version, "
            "hard_bounces, bounce_score, created_at, updated_at) values ('removed@invalid', "
            f"'removed:{digest_hash}:1', '', 'removed', '[]', 2, 0, 0, '2026-01-01 00:00:00', "
            "'2026-01-01 00:00:00')"))
    upgrade_schema(engine)
    engine.dispose()
    (tmp_path / "digest.toml").write_text(f'[store]\nurl = "{store_url}"\n')
    d = Digest(tmp_path, FixedClock(SAMPLE_WEEK))
    env = {"DIGEST_SECRET_KEY": "s" * 40}
    result = d("subscribers", "import", "-", input="email\nGone@Example.org\nnew@example.org\n",
               env=env)
    assert result.stderr == ("rejected: <stdin>:2: Gone@example.org was removed from the list "
                             "earlier; not added again (with their consent: digest subscribers "
                             "add Gone@example.org --force)\n")
    refused = d("subscribers", "add", "gone@example.org", env=env)
    assert (refused.exit_code, refused.output) == (
        1, "Error: gone@example.org was removed from the list earlier; add it again only "
           "with their consent: digest subscribers add gone@example.org --force\n")
    d.ok("subscribers", "add", "gone@example.org", "--force", env=env)


ADDRESSES = [
    "ada@example.org", "Ada.Lovelace@EXAMPLE.ORG", "a+tag@sub.example.co.uk", "o'neil@example.ie",
    "Postmaster@Example.org", "ABUSE@example.org", "www@example.org", "a..b@example.org",
    ".a@example.org", "a.@example.org", "a@localhost", "a@example", "a@invalid",
    "a@example.test", "a@-x.org", "a@x-.org", "a@exa_mple.org", "a@123.45.67.89",
    "a@[127.0.0.1]", "a@xn--bcher-kva.example.com", "a@bücher.example.com", "Ada <a@b.org>",
    "a@b.org.", "a@@b.org", "a@b@c.org", "x" * 64 + "@example.org", "x" * 65 + "@example.org",
    "a@" + "b" * 63 + ".org", "a@" + "b" * 64 + ".org",
    "a" * 64 + "@" + ".".join(["b" * 60] * 3) + ".org", " ada@example.org ", "ada@example.org\n",
    "ada@EXAMPLE.org", "ädä@example.org", "\"quoted\"@example.org", "a b@example.org", "",
    "@example.org", "ada@", "a@b.c", "a@e.x4mple.org", "a@xn--.org", "a@1.2.3.4.5",
]


def test_addresses_normalise_as_the_validator_says(digest: Digest) -> None:
    """The short way for plain addresses (the domain checked once per file) gives what
    email_validator gives, and refuses what it refuses, in the same words."""
    from email_validator import EmailNotValidError, validate_email

    from digest.audience.subscribers import normalise_email
    from digest.errors import InputError

    for address in ADDRESSES * 2:       # the second time, the domains are known
        try:
            info = validate_email(address.strip(), check_deliverability=False,
                                  allow_smtputf8=False)
            expected = info.ascii_email or info.normalized
        except EmailNotValidError as exc:
            expected = f"{address.strip()!r} is not a valid email address: {exc}"
        try:
            got = normalise_email(address)
        except InputError as exc:
            got = str(exc)
        assert got == expected, address
