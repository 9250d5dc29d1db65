"""The editor's desk and the click links: how long an editor waits, against the cost of
rendering the edition once.

    .venv/bin/python bench/desk.py [--articles 581] [--rounds 5]

A store of real news items (tests/data/topics/ag_news_train_sample.csv, 581 AG News
items, topics chosen by digest itself, four sources), 100 subscribers. Each round, in
turn: build the edition's content once (the baseline: what every rendering does), draft
the edition, show it (desk_view), pin one story, move one down, render the preview, and
cancel it (articles back to the pool). Then the click links through the web app (Flask's
test client, no network): GET /r/<token> (token checked, click recorded, 302) against
GET /unsubscribe (a static page of the same app) as the baseline. Prints medians and
ratios.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from digest.audience.clicks import ClickCounter  # noqa: E402
from digest.audience.subscribers import SubscriberBook  # noqa: E402
from digest.config import load_settings, with_overrides  # noqa: E402
from digest.content.edition import build_content  # noqa: E402
from digest.content.topics import TopicClassifier  # noqa: E402
from digest.delivery import desk  # noqa: E402
from digest.ingest import import_files  # noqa: E402
from digest.store.db import Store  # noqa: E402
from digest.store.drafts import coming_articles, next_coming  # noqa: E402
from digest.web.app import create_app  # noqa: E402

SAMPLE = ROOT / "tests" / "data" / "topics" / "ag_news_train_sample.csv"
SOURCES = {"1": "World Wire", "2": "Sports Desk", "3": "Market Daily", "4": "Tech Review"}


def _items(limit: int) -> list[dict[str, str]]:
    now = datetime.now(UTC)
    with SAMPLE.open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:limit + 1]
    return [{"title": title, "summary": text, "body": text, "source": SOURCES[label],
             "url": f"https://news.example.org/{n}",
             "published_at": (now - timedelta(minutes=7 * n)).isoformat()}
            for n, (label, title, text) in enumerate(rows)]


def _timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return (time.perf_counter() - start) * 1000


def _median(values: list[float]) -> float:
    return statistics.median(values)


def desk_rounds(store: Store, settings, rounds: int) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, ms in _one_round(store, settings):
            times.setdefault(name, []).append(ms)
    return times


def _one_round(store: Store, settings) -> list[tuple[str, float]]:  # type: ignore[no-untyped-def]
    """Draft, look, change, preview and cancel once: (what, ms) each."""
    now = store.clock.now()
    view: list[desk.DeskView] = []
    out = [("draft", _timed(lambda: view.append(desk.draft_edition(store, settings, now))))]
    number = view[0].number
    edition = next_coming(store)
    assert edition is not None
    articles = coming_articles(store, edition)
    first = view[0].sections[0].articles
    out += [
        ("build content (baseline)",
         _timed(lambda: build_content(articles, settings, number, edition.cutoff))),
        ("desk_view", _timed(lambda: desk.desk_view(store, settings, number))),
        ("pin", _timed(lambda: desk.pin_article(store, settings, number, first[-1].id))),
        ("move down", _timed(lambda: desk.shift_article(store, settings, number,
                                                        first[0].id, 1))),
        ("preview", _timed(lambda: desk.preview_edition(store, settings, number))),
        ("cancel", _timed(lambda: desk.cancel_edition(store, settings, number, now))),
    ]
    return out


def click_rounds(store: Store, settings, rounds: int, per_round: int  # type: ignore[no-untyped-def]
                 ) -> dict[str, list[float]]:
    """Requests per second through the app: /r/ links of a sent edition, /unsubscribe."""
    from digest.delivery.runner import send_edition
    from digest.mail.transport import make_transport

    settings = with_overrides(settings, delivery={"transport": "maildir",
                                                  "maildir": str(Path(store.url[10:]).parent
                                                                 / "outbox")})
    report = send_edition(store, settings, make_transport(settings), force=True)
    assert report.edition is not None
    counter = ClickCounter(store, settings)
    edition = desk.desk_view(store, settings, report.edition)
    links = [counter.link(report.edition, a.id).split("/r/", 1)[1] for a in edition.articles]
    client = create_app(settings, store).test_client()
    rates: dict[str, list[float]] = {}
    agent = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 "
                           "Firefox/125.0"}
    for _ in range(rounds):
        for name, path in (("GET /unsubscribe (baseline)", lambda _n: "/unsubscribe"),
                           ("GET /r/<token>", lambda n: f"/r/{links[n % len(links)]}")):
            start = time.perf_counter()
            for n in range(per_round):
                # A different reader each time: no burst, every click counted.
                client.get(path(n), headers=agent,
                           environ_base={"REMOTE_ADDR": f"10.{n // 65536 % 256}."
                                                        f"{n // 256 % 256}.{n % 256}"})
            rates.setdefault(name, []).append(per_round / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--articles", type=int, default=581)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clicks", type=int, default=300, help="requests per round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(None, environ={
            "DIGEST_STORE__URL": f"sqlite:///{folder}/digest.db",
            "DIGEST_SECRET_KEY": "b" * 40, "DIGEST_TRACKING__CLICKS": "true"})
        store = Store.from_settings(settings)
        source = Path(folder) / "items.json"
        source.write_text(json.dumps(_items(args.articles)))
        import_files(store.writes, TopicClassifier.from_settings(settings), store.clock, [source])
        book = SubscriberBook(store, settings)
        for n in range(100):
            book.add(f"reader{n}@example.org")
        times = desk_rounds(store, settings, args.rounds)
        rates = click_rounds(store, settings, args.rounds, args.clicks)
        store.close()
    base = _median(times["build content (baseline)"])
    print(f"The desk, {args.articles} articles, medians of {args.rounds} rounds:")
    for name, values in times.items():
        print(f"  {name:26} {_median(values):8.1f} ms   {_median(values) / base:5.2f}x "
              f"the baseline")
    base_rate = _median(rates["GET /unsubscribe (baseline)"])
    print(f"Click links, {args.clicks} requests a round, medians of {args.rounds} rounds:")
    for name, values in rates.items():
        print(f"  {name:26} {_median(values):8.0f} requests/s   "
              f"{_median(values) / base_rate:5.2f}x the baseline")


if __name__ == "__main__":
    main()
