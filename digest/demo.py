"""`digest demo`: the whole pipeline in a fresh folder, offline, through a loopback SMTP
server, leaving the received messages behind to look at."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from .audience.subscribers import SubscriberBook
from .clock import Clock
from .config import load_settings, with_overrides
from .content.topics import TopicClassifier
from .delivery.desk import preview_edition
from .delivery.runner import SendReport, send_edition
from .delivery.sender import ProgressFn
from .errors import InputError
from .ingest import import_files
from .ingest.writer import fresh_from
from .mail.loopback import LoopbackSMTPServer
from .mail.transport import SmtpTransport
from .resources import package_resource
from .store.db import Store
from .tokens import create_secret_file

__all__ = ["DemoResult", "run_demo"]

_MARKER = ".digest-demo"
# Written at the top of the demo's digest.toml.
_DEMO_NOTE = """\
# Written by `digest demo`. Its SMTP server (127.0.0.1, a port of the moment) ran only
# while the demo ran: [smtp] below is the example's, and no server listens there. To
# keep exploring: digest --config THIS_FILE send --dry-run (builds everything, sends
# nothing), or set [smtp] to a real server, or [delivery] transport = "maildir" to keep
# the mail in a folder.

"""


@dataclass(frozen=True)
class DemoResult:
    folder: Path
    config: Path
    outbox: Path
    preview: Path
    articles: int
    subscribers: int
    report: SendReport
    messages: int


def _prepare(folder: Path) -> None:
    if folder.exists() and any(folder.iterdir()):
        if not (folder / _MARKER).exists():
            raise InputError(f"{folder} is not empty and holds no earlier demo; choose a new "
                             f"folder, e.g. digest demo digest-demo")
        # An earlier demo of ours: start it over.
        for name in ("digest.toml", "articles.json", "digest.db", "digest.db-wal", "digest.db-shm",
                     "preview.html"):
            (folder / name).unlink(missing_ok=True)
        shutil.rmtree(folder / "outbox", ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _MARKER).write_text("made by digest demo; safe to delete this folder\n")


def _sample_week(sample: Path, to: Path, now: datetime) -> None:
    """The sample articles, written to `to` with their dates moved so that the newest is an
    hour before now: the sample is a week of news, and news is recent whenever the demo
    runs."""
    articles = json.loads(sample.read_text(encoding="utf-8"))
    dates = [datetime.fromisoformat(a["published_at"]) for a in articles]
    shift = now - timedelta(hours=1) - max(dates)
    for article, date in zip(articles, dates, strict=True):
        article["published_at"] = (date + shift).isoformat()
    to.write_text(json.dumps(articles, indent=1, ensure_ascii=False), encoding="utf-8")


def run_demo(folder: Path, progress: ProgressFn | None = None,
             clock: Clock | None = None) -> DemoResult:
    _prepare(folder)
    config = folder / "digest.toml"
    # The demo's SMTP server lives only as long as the demo: the config says so first.
    config.write_text(_DEMO_NOTE + package_resource("config.example.toml").read_text(
        encoding="utf-8"), encoding="utf-8")
    outbox = folder / "outbox"
    preview = folder / "preview.html"
    with LoopbackSMTPServer(outbox=outbox) as server:
        settings = with_overrides(load_settings(config), smtp={
            "host": "127.0.0.1", "port": server.port, "security": "none", "username": "",
            "connections": 2})
        # Like `digest init`: the links in the demo's mail are signed with a random key.
        create_secret_file(settings.secret_file)
        store = Store.from_settings(settings, clock)
        try:
            classifier = TopicClassifier.from_settings(settings)
            now = store.clock.now()
            articles = folder / "articles.json"
            _sample_week(package_resource("data/sample_articles.json"), articles, now)
            imported = import_files(store.writes, classifier, store.clock, [articles],
                                    fresh_from=fresh_from(settings.ingest, now))
            book = SubscriberBook(store, settings)
            subs = book.import_csv(package_resource("data/sample_subscribers.csv"))
            report = send_edition(store, settings, SmtpTransport(settings.smtp),
                                  progress=progress)
            # The whole edition, every topic (a received message is one subscriber's,
            # with only their topics).
            if report.edition is not None:
                preview.write_text(preview_edition(store, settings, report.edition).html,
                                   encoding="utf-8")
        finally:
            store.close()
    received = sorted(outbox.glob("*.eml"))
    return DemoResult(folder, config, outbox, preview, imported.added, subs.added, report,
                      len(received))
