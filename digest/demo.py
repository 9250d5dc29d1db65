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
    shutil.copyfile(package_resource("config.example.toml"), config)
    outbox = folder / "outbox"
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
        finally:
            store.close()
    received = sorted(outbox.glob("*.eml"))
    preview = folder / "preview.html"
    if server.received:
        html_part = server.received[0].message().get_body(preferencelist=("html",))
        if html_part is not None:
            preview.write_text(html_part.get_content(), encoding="utf-8")
    return DemoResult(folder, config, outbox, preview, imported.added, subs.added, report,
                      len(received))
