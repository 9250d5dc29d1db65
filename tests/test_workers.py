"""`digest worker`: many sender processes on one ledger, one of them killed half-way."""

from __future__ import annotations

import collections
import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import SAMPLE_JSON, Digest, run_digest, smtp_env, sql

from digest.mail.loopback import LoopbackSMTPServer

# The store's contract: on PostgreSQL too when DIGEST_TEST_POSTGRES names a server.
pytestmark = pytest.mark.both_backends


@pytest.fixture
def counting_smtp() -> Iterator[LoopbackSMTPServer]:
    server = LoopbackSMTPServer(headers_only=True).start()
    yield server
    server.stop()


def bulk_subscribers(folder: Path, count: int) -> None:
    """Many subscribers straight into the store (the CSV import is tested elsewhere)."""
    from sqlalchemy import create_engine, insert

    from digest.config import load_settings
    from digest.store.models import Subscriber, SubscriberStatus

    engine = create_engine(load_settings(folder / "digest.toml", environ={}).store_url)
    now = datetime.now(UTC)     # written as another program would, at its time
    rows = [{"email": f"r{i:05d}@example.org", "email_key": f"r{i:05d}@example.org",
             "name": f"Reader {i}", "status": SubscriberStatus.ACTIVE, "topics": [],
             "token_version": 1, "hard_bounces": 0, "created_at": now, "updated_at": now}
            for i in range(count)]
    with engine.begin() as conn:
        conn.execute(insert(Subscriber), rows)
    engine.dispose()


def test_send_enqueue_then_one_worker(digest: Digest, smtp: LoopbackSMTPServer,
                                      tmp_path: Path) -> None:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    bulk_subscribers(tmp_path, 30)
    env = smtp_env(smtp)
    result = digest.ok("send", "--enqueue", env=env)
    assert result.stdout == ("Created edition 1: 30 deliveries pending. Workers send them: "
                             "digest worker\n")
    assert smtp.received == []
    result = digest.ok("worker", "--until-done", env=env)
    assert result.stdout == "Worker done: sent 30, deferred 0, failed 0.\n"
    assert len(smtp.by_recipient()) == 30 and len(smtp.received) == 30
    assert sql(tmp_path, "select status from editions") == [("sent",)]
    # With [delivery] workers = true a plain `digest send` only queues, too.
    (tmp_path / "more.json").write_text(json.dumps([{"title": "Another", "body": "Text."}]))
    digest.ok("articles", "import", "more.json")
    queued = digest.ok("send", "--yes", env={**env, "DIGEST_DELIVERY__WORKERS": "true"})
    assert queued.stdout.startswith("Created edition 2: 30 deliveries pending.")
    assert len(smtp.received) == 30


@pytest.mark.slow
def test_four_workers_one_killed_half_way(digest: Digest, counting_smtp: LoopbackSMTPServer,
                                          tmp_path: Path, store_url: str) -> None:
    # Enough for four workers to each hold batches when one dies (the 20,000 of the brief
    # are a measure of speed: bench/workers.py); the same on both stores.
    total = 2_000
    digest.ok("articles", "import", str(SAMPLE_JSON))
    bulk_subscribers(tmp_path, total)
    env = smtp_env(counting_smtp, DIGEST_SMTP__CONNECTIONS="3",
                   DIGEST_DELIVERY__BATCH_SIZE="50", DIGEST_DELIVERY__LEASE_SECONDS="20")
    digest.ok("send", "--enqueue", env=env)
    workers = [run_digest(tmp_path, "worker", "--until-done", "--poll", "0.5", env=env)
               for _ in range(4)]
    victim = workers[0]
    deadline = time.monotonic() + 120
    while len(counting_smtp.received) < total // 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    held_before = sql(tmp_path, "select count(*) from deliveries where status = 'sending' "
                                f"and claimed_by like '%/{victim.pid}/%'")[0][0]
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert held_before > 0, "the killed worker held a batch"
    for proc in workers[1:]:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err

    per_recipient = collections.Counter(r for item in counting_smtp.received
                                        for r in item.recipients)
    assert len(per_recipient) == total, "nobody missed"
    duplicates = {r: n for r, n in per_recipient.items() if n > 1}
    assert len(duplicates) <= 3, duplicates      # at most the killed worker's connections
    for rcpt in duplicates:
        ids = {item.message()["Message-ID"] for item in counting_smtp.received
               if rcpt in item.recipients}
        assert len(ids) == 1
    assert sql(tmp_path, "select status, count(*) from deliveries group by status") == \
        [("sent", total)]
    assert sql(tmp_path, "select status from editions") == [("sent",)]
    print(f"{total} recipients, 4 workers, one killed holding {held_before}: "
          f"{len(duplicates)} sent twice; pid {os.getpid()}")


def test_a_worker_whose_server_refuses_the_message_leaves_the_edition_paused(
        digest: Digest, smtp: LoopbackSMTPServer, tmp_path: Path) -> None:
    """In worker mode an edition never showed "paused"."""
    digest.ok("articles", "import", str(SAMPLE_JSON))
    bulk_subscribers(tmp_path, 5)
    env = smtp_env(smtp)
    digest.ok("send", "--enqueue", env=env)
    smtp.reply_policy = lambda phase, _f, _r: "554 5.7.1 Rejected" if phase == "DATA" else None
    result = digest("worker", "--until-done", env=env)
    assert result.exit_code == 1
    assert "the SMTP server refused the message (DATA): 554 5.7.1 Rejected" in result.output
    assert sql(tmp_path, "select status from editions") == [("paused",)]
    assert "paused" in digest.ok("editions", "list").stdout
    smtp.reply_policy = None
    digest.ok("worker", "--until-done", env=env)
    assert sql(tmp_path, "select status from editions") == [("sent",)]
    assert len(smtp.by_recipient()) == 5
