"""The scheduler: real scheduler processes, a real SQLite file, a real SMTP server, cron
slots a few seconds ahead; and the slot functions with an injected clock."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.date import DateTrigger
from conftest import (
    DATA,
    SAMPLE_JSON,
    Digest,
    need,
    run_digest,
    smtp_env,
    sql,
    write_subscribers,
)
from mailservers import Dovecot, need_dovecot
from sqlalchemy import text

from digest.audience.subscribers import SubscriberBook
from digest.clock import FixedClock
from digest.config import load_settings, with_overrides
from digest.delivery.runner import run_slot, send_due
from digest.delivery.timing import next_runs
from digest.mail.loopback import LoopbackSMTPServer
from digest.scheduler import edition_trigger
from digest.store.db import Store

_RUNNING: list[Scheduler] = []


@pytest.fixture(autouse=True)
def _no_leftover_schedulers() -> Iterator[None]:
    yield
    while _RUNNING:
        sched = _RUNNING.pop()
        if sched.proc.poll() is None:
            sched.stop(signal.SIGKILL)


class Scheduler:
    """`digest schedule run` as a process, its log lines collected as they come."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        # faulthandler: a scheduler that does not stop is made to say where it hangs.
        self.proc = run_digest(folder, "schedule", "run", env={**env,
                                                               "PYTHONFAULTHANDLER": "1"})
        _RUNNING.append(self)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no log line with {text!r}:\n" + "\n".join(self.lines))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)      # the threads' stacks on stderr
            self.proc.wait(timeout=30)
            self._reader.join(timeout=10)
            raise AssertionError("the scheduler did not stop within 120 s:\n"
                                 + "\n".join(self.lines)) from None
        self._reader.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode


def slot_in(seconds: float) -> datetime:
    """A whole second at least `seconds` from now (negative: ago)."""
    return datetime.fromtimestamp(math.ceil(time.time() + seconds), UTC)


def store_edition_job(folder: Path, env: dict[str, str], next_run: datetime) -> None:
    """The edition job as a scheduler that ran before would have left it in the store,
    its next run at next_run: a scheduler process started after it keeps that run time
    (past or not), so a test never races the process's start-up (a busy machine takes
    seconds to start one) against a slot a few seconds ahead."""
    from digest.scheduler import EDITION_JOB, JOBS_TABLE, edition_job, edition_trigger

    config = str(folder / "digest.toml")
    settings = load_settings(config, environ=env)
    lender = BlockingScheduler(timezone=UTC)       # never started: lends its defaults
    jobstore = SQLAlchemyJobStore(url=settings.store_url, tablename=JOBS_TABLE)
    jobstore.start(lender, "default")
    try:
        jobstore.add_job(Job(lender, id=EDITION_JOB, name=EDITION_JOB, func=edition_job,
                             args=(config,), kwargs={}, trigger=edition_trigger(settings),
                             executor="default", coalesce=True, max_instances=1,
                             misfire_grace_time=settings.schedule.misfire_grace,
                             next_run_time=next_run))
    finally:
        jobstore.shutdown()


def daily_cron(at: datetime) -> str:
    """A 6-field (seconds first) cron that fires once a day at `at` (UTC)."""
    return f"{at.second} {at.minute} {at.hour} * * *"


def wait_until(condition, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def db_rows(folder: Path, statement: str) -> list[tuple[object, ...]]:
    return sql(folder, statement)


def env_for(smtp: LoopbackSMTPServer, cron: str, **extra: str) -> dict[str, str]:
    settings = {"DIGEST_SCHEDULE__CRON": cron, "DIGEST_SCHEDULE__TIMEZONE": "UTC",
                "DIGEST_SCHEDULE__MISFIRE_GRACE": "60", **extra}
    return smtp_env(smtp, **settings)


@pytest.fixture
def newsroom(digest: Digest, tmp_path: Path) -> Digest:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("subscribers", "import", str(write_subscribers(tmp_path, 20)))
    return digest


@pytest.mark.slow
def test_edition_goes_out_on_its_slot_once(newsroom: Digest, smtp: LoopbackSMTPServer,
                                           tmp_path: Path) -> None:
    slot = slot_in(2)
    store_edition_job(tmp_path, env_for(smtp, daily_cron(slot)), slot)
    sched = Scheduler(tmp_path, env_for(smtp, daily_cron(slot)))
    sched.wait_for(f"slot {slot.isoformat()}: edition 1 sent: sent 20")
    assert sched.stop() == 0, sched.lines
    assert len(smtp.received) == 20
    assert len({item.recipients[0] for item in smtp.received}) == 20
    assert min(item.at for item in smtp.received) >= slot.timestamp()
    [(number, status, stored_slot)] = db_rows(tmp_path, "select number, status, slot "
                                                        "from editions")
    assert (number, status) == (1, "sent")
    assert str(stored_slot).startswith(slot.strftime("%Y-%m-%d %H:%M:%S"))
    assert any("scheduler stopped" in line for line in sched.lines)

    # Restarts keep one copy of each job in the job store.
    for _ in range(2):
        again = Scheduler(tmp_path, env_for(smtp, daily_cron(slot)))
        again.wait_for("scheduler started")
        assert again.stop() == 0, '\n'.join(again.lines)
    ids = sorted(i for (i,) in db_rows(tmp_path, "select id from apscheduler_jobs"))
    assert ids == ["digest-edition", "digest-feeds", "digest-sweep"]
    assert len(smtp.received) == 20


@pytest.mark.slow
def test_sigkill_mid_send_and_restart_resumes_the_slot(digest: Digest,
                                                       smtp: LoopbackSMTPServer,
                                                       tmp_path: Path) -> None:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("subscribers", "import", str(write_subscribers(tmp_path, 300)))
    slot = slot_in(1)
    env = env_for(smtp, daily_cron(slot), DIGEST_SMTP__MAX_PER_SECOND="120",
                  DIGEST_SMTP__CONNECTIONS="4")
    store_edition_job(tmp_path, env, slot)
    sched = Scheduler(tmp_path, env)
    wait_until(lambda: len(smtp.received) >= 100)
    sched.stop(signal.SIGKILL)
    assert len(smtp.received) < 300
    restarted = Scheduler(tmp_path, env)
    wait_until(lambda: len(smtp.by_recipient()) == 300, timeout=120)
    wait_until(lambda: db_rows(tmp_path, "select status from editions") == [("sent",)])
    assert restarted.stop() == 0, restarted.lines
    counts = {rcpt: len(items) for rcpt, items in smtp.by_recipient().items()}
    duplicates = {r: n for r, n in counts.items() if n > 1}
    assert len(counts) == 300 and len(duplicates) <= 4, duplicates
    for rcpt in duplicates:
        assert len({i.message()["Message-ID"] for i in smtp.by_recipient()[rcpt]}) == 1
    assert db_rows(tmp_path, "select number, status from editions") == [(1, "sent")]
    assert db_rows(tmp_path, "select status, count(*) from deliveries group by status") == \
        [("sent", 300)]


@pytest.mark.slow
def test_a_sigterm_the_kernel_hands_to_any_thread_stops_the_scheduler(
        newsroom: Digest, smtp: LoopbackSMTPServer, tmp_path: Path) -> None:
    """The kernel may deliver a process's SIGTERM to any thread that does not block it;
    Python handles it in the main thread, when that next runs Python code. One handed to a
    worker thread left the main thread asleep until its next job (here: an hour)."""
    import ctypes
    import platform

    tgkill = {"x86_64": 234, "aarch64": 131}.get(platform.machine())
    if tgkill is None:
        pytest.skip(f"tgkill's system call number on {platform.machine()} is not known here")
    sched = Scheduler(tmp_path, env_for(smtp, "0 8 * * mon",
                                        DIGEST_SCHEDULE__RETRY_MINUTES="60",
                                        DIGEST_SCHEDULE__FEEDS_MINUTES="60"))
    sched.wait_for("scheduler started")
    pid = sched.proc.pid

    def asleep() -> bool:
        """Every thread sleeping: the start-up sweep is over and the main thread waits for
        the next job (a signal that comes while it runs Python code is handled anyway)."""
        states = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                states.append(Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                              .rsplit(")", 1)[1].split()[0])
        return bool(states) and set(states) == {"S"}

    quiet = 0
    while quiet < 10:                  # ten looks in a row, 50 ms apart
        quiet = quiet + 1 if asleep() else 0
        assert sched.proc.poll() is None, "\n".join(sched.lines)
        time.sleep(0.05)
    others = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
    assert others, "the scheduler runs threads besides its main one"
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(tgkill, pid, others[-1], signal.SIGTERM) == 0, ctypes.get_errno()
    assert sched.proc.wait(timeout=30) == 0, "\n".join(sched.lines)
    sched.wait_for("scheduler stopped")
    sched.stop()


@pytest.mark.slow
def test_sigterm_finishes_the_message_in_flight_and_exits_0(digest: Digest,
                                                            smtp: LoopbackSMTPServer,
                                                            tmp_path: Path) -> None:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("subscribers", "import", str(write_subscribers(tmp_path, 300)))
    slot = slot_in(1)
    env = env_for(smtp, daily_cron(slot), DIGEST_SMTP__MAX_PER_SECOND="100")
    store_edition_job(tmp_path, env, slot)
    sched = Scheduler(tmp_path, env)
    wait_until(lambda: len(smtp.received) >= 60)
    assert sched.stop(signal.SIGTERM) == 0
    received = len(smtp.received)
    statuses = dict(db_rows(tmp_path, "select status, count(*) from deliveries group by status"))
    assert "sending" not in statuses                     # everything claimed was handed back
    assert statuses["sent"] == received and statuses["pending"] == 300 - received
    assert any("SIGTERM: finishing the messages in flight" in line for line in sched.lines)


@pytest.mark.slow
def test_missed_slot_within_the_grace_runs_once(newsroom: Digest, smtp: LoopbackSMTPServer,
                                                tmp_path: Path) -> None:
    # The scheduler was down over its slot and comes back 5 s (and its start-up) late:
    # well within a 10-minute grace, however busy the machine.
    slot = slot_in(-5)
    env = env_for(smtp, daily_cron(slot), DIGEST_SCHEDULE__MISFIRE_GRACE="600")
    store_edition_job(tmp_path, env, slot)
    late = Scheduler(tmp_path, env)
    late.wait_for(f"slot {slot.isoformat()}: edition 1 sent: sent 20")
    assert late.stop() == 0, late.lines
    assert len(smtp.received) == 20
    assert db_rows(tmp_path, "select number, status from editions") == [(1, "sent")]


@pytest.mark.slow
def test_missed_slot_beyond_the_grace_is_skipped_and_logged(newsroom: Digest,
                                                            smtp: LoopbackSMTPServer,
                                                            tmp_path: Path) -> None:
    # Down over its slot and back two minutes late, with a grace of one minute.
    slot = slot_in(-120)
    env = env_for(smtp, daily_cron(slot), DIGEST_SCHEDULE__MISFIRE_GRACE="60")
    store_edition_job(tmp_path, env, slot)
    late = Scheduler(tmp_path, env)
    line = late.wait_for("was missed by more than the misfire grace")
    assert slot.isoformat() in line
    assert late.stop() == 0, late.lines
    assert smtp.received == []
    assert db_rows(tmp_path, "select count(*) from editions") == [(0,)]
    assert db_rows(tmp_path, "select count(*) from articles where edition_id is null") == \
        [(30,)]                                  # they wait for the next slot


@pytest.mark.slow
@pytest.mark.both_backends
def test_a_second_scheduler_refuses_to_start(newsroom: Digest, smtp: LoopbackSMTPServer,
                                             tmp_path: Path) -> None:
    first = Scheduler(tmp_path, env_for(smtp, "0 8 * * mon"))
    first.wait_for("scheduler started")
    second = run_digest(tmp_path, "schedule", "run", env=env_for(smtp, "0 8 * * mon"))
    _out, err = second.communicate(timeout=30)
    assert second.returncode == 1
    if load_settings(tmp_path / "digest.toml", environ={}).store_url.startswith("sqlite"):
        assert err == (f"Error: another scheduler (pid {first.proc.pid}) is already running "
                       f"on the store {tmp_path / 'digest.db'}; stop it first (one scheduler "
                       f"per store)\n")
    else:
        assert err == ("Error: another scheduler is already running on this store; stop it "
                       "first (one scheduler per store)\n")
    assert first.stop() == 0, first.lines


def test_berlin_daylight_saving_keeps_the_local_hour(tmp_path: Path) -> None:
    settings = load_settings(None, environ={"DIGEST_SCHEDULE__CRON": "0 8 * * *",
                                            "DIGEST_SCHEDULE__TIMEZONE": "Europe/Berlin"})
    trigger = edition_trigger(settings)
    spring = next_runs(trigger, datetime(2026, 3, 28, 0, tzinfo=UTC), 3)
    autumn = next_runs(trigger, datetime(2026, 10, 24, 0, tzinfo=UTC), 3)
    for run in spring + autumn:
        assert (run.hour, run.minute) == (8, 0)              # always 08:00 in Berlin
    assert [r.astimezone(UTC).hour for r in spring] == [7, 6, 6]   # CET → CEST on Mar 29
    assert [r.astimezone(UTC).hour for r in autumn] == [6, 7, 7]   # CEST → CET on Oct 25
    assert [r.day for r in spring] == [28, 29, 30] and [r.day for r in autumn] == [24, 25, 26]


def _store(store_url: str, **schedule: object):  # type: ignore[no-untyped-def]
    settings = load_settings(None, environ={"DIGEST_STORE__URL": store_url,
                                            "DIGEST_SECRET_KEY": "k" * 32})
    return with_overrides(settings, schedule=schedule)


def test_local_time_waves_reach_each_zone_at_its_own_0800(store_url: str,
                                                          smtp: LoopbackSMTPServer) -> None:
    settings = _store(store_url, cron="0 8 * * mon", timezone="Europe/Berlin", local_time=True)
    settings = with_overrides(settings, smtp={"port": smtp.port})
    sunday = datetime(2026, 11, 29, 12, tzinfo=UTC)
    clock = FixedClock(sunday)                   # the articles come in on Sunday
    store = Store.from_settings(settings, clock)
    from digest.content.topics import TopicClassifier
    from digest.ingest import import_files
    import_files(store.writes, TopicClassifier(settings.topics, "More stories"), clock,
                 [SAMPLE_JSON])
    book = SubscriberBook(store, settings)
    book.add("tokyo@example.org", timezone="Asia/Tokyo")
    book.add("berlin@example.org", timezone="Europe/Berlin")
    book.add("newyork@example.org", timezone="America/New_York")
    book.add("default@example.org")                      # the config's zone: Berlin

    slot = next_runs(edition_trigger(settings, store, sunday), sunday, 1)[0]
    assert slot == datetime(2026, 11, 29, 23, tzinfo=UTC)    # Monday 08:00 in Tokyo

    def got() -> set[str]:
        return {i.recipients[0].split("@")[0] for i in smtp.received}

    def at(when: datetime) -> datetime:
        clock.set(when)
        return when

    run_slot(store, settings, slot, now=at(slot))
    assert got() == {"tokyo"}
    send_due(store, settings, now=at(datetime(2026, 11, 30, 6, 59, tzinfo=UTC)))
    assert got() == {"tokyo"}
    send_due(store, settings, now=at(datetime(2026, 11, 30, 7, 0, tzinfo=UTC)))  # Berlin 8:00
    assert got() == {"tokyo", "berlin", "default"}
    send_due(store, settings, now=at(datetime(2026, 11, 30, 12, 59, tzinfo=UTC)))
    assert got() == {"tokyo", "berlin", "default"}
    send_due(store, settings, now=at(datetime(2026, 11, 30, 13, 0, tzinfo=UTC)))  # New York
    assert got() == {"tokyo", "berlin", "default", "newyork"}
    assert len(smtp.received) == 4
    with store.engine.connect() as conn:
        waves = dict(conn.execute(text("select s.email, d.not_before from deliveries d join "
                                       "subscribers s on s.id = d.subscriber_id")).all())
        status = conn.execute(text("select status from editions")).scalar()
    assert str(waves["newyork@example.org"]).startswith("2026-11-30 13:00:00")
    assert status == "sent"
    store.close()


def test_thin_week_is_skipped_and_articles_carry_over(store_url: str, smtp: LoopbackSMTPServer,
                                                      clock: FixedClock) -> None:
    settings = _store(store_url)
    settings = with_overrides(settings, smtp={"port": smtp.port},
                              digest={"min_articles": 31})
    store = Store.from_settings(settings, clock)
    from digest.content.topics import TopicClassifier
    from digest.ingest import import_files
    import_files(store.writes, TopicClassifier(settings.topics, "More stories"), clock,
                 [SAMPLE_JSON])
    SubscriberBook(store, settings).add("a@example.org")
    now = clock.advance(minutes=1)
    outcome = run_slot(store, settings, now - timedelta(seconds=1), now=now)
    assert outcome.action == "skipped"
    assert outcome.detail == ("30 new articles, fewer than min_articles 31; they carry over "
                              "to the next edition")
    assert smtp.received == []
    settings = with_overrides(settings, digest={"min_articles": 30})
    outcome = run_slot(store, settings, now, now=now + timedelta(seconds=1))
    assert (outcome.action, outcome.edition) == ("sent", 1)
    assert len(smtp.received) == 1
    store.close()


def test_a_slot_runs_within_the_misfire_grace_and_is_skipped_beyond_it(
        store_url: str, smtp: LoopbackSMTPServer, clock: FixedClock) -> None:
    """The scheduler's decision at a late start, in-process with the clock set: a slot
    missed by less than misfire_grace runs once (a second run finds it done); one missed
    by more is skipped, and its articles wait for the next slot."""
    from digest.content.topics import TopicClassifier
    from digest.ingest import import_files
    from digest.scheduler import run_due_slot

    settings = with_overrides(_store(store_url, cron="0 8 * * mon", timezone="UTC",
                                     misfire_grace=600), smtp={"port": smtp.port})
    monday_0800 = datetime(2031, 3, 10, 8, tzinfo=UTC)
    clock.set(monday_0800 - timedelta(days=2))
    store = Store.from_settings(settings, clock)
    try:
        import_files(store.writes, TopicClassifier(settings.topics, "More stories"), clock,
                     [SAMPLE_JSON])
        SubscriberBook(store, settings).add("a@example.org")
        clock.set(monday_0800 + timedelta(minutes=11))      # 11 min late: beyond 10
        assert run_due_slot(store, settings) is None
        assert smtp.received == []
        clock.set(monday_0800 + timedelta(days=7, minutes=9))  # next Monday, 9 min late
        outcome = run_due_slot(store, settings)
        assert outcome is not None
        assert (outcome.slot, outcome.action, outcome.edition) == (
            monday_0800 + timedelta(days=7), "sent", 1)
        assert len(smtp.received) == 1
        again = run_due_slot(store, settings)
        assert again is not None and (again.action, again.edition) == ("done", 1)
        assert len(smtp.received) == 1
    finally:
        store.close()


def test_schedule_show(newsroom: Digest) -> None:
    result = newsroom.ok("schedule", "show", env={"DIGEST_SCHEDULE__TIMEZONE": "Europe/Berlin",
                                                  "DIGEST_SCHEDULE__LOCAL_TIME": "true"})
    assert "Edition: cron '0 8 * * mon' in Europe/Berlin (local time" in result.stdout
    assert "Waves of the next edition:" in result.stdout
    assert "Europe/Berlin            Mon" in result.stdout
    assert "No editions yet." in result.stdout
    bad = newsroom("schedule", "show", env={"DIGEST_SCHEDULE__CRON": "every monday"})
    assert bad.exit_code == 1
    assert bad.output == ("Error: [schedule] cron 'every monday' needs 5 fields (minute hour "
                          "day month weekday), e.g. \"0 8 * * mon\"\n")


def test_schedule_show_lists_every_job_the_scheduler_runs(newsroom: Digest) -> None:
    """`schedule show` named the edition and the retries, but not the feed polling and
    the bounce mailbox, which `schedule run` starts as well."""
    shown = newsroom.ok("schedule", "show").stdout
    assert "Feed polling: every 30 minutes, no feeds yet (digest feeds add URL)\n" in shown
    assert "Bounce mailbox: not read (no [bounces] host)\n" in shown
    newsroom.ok("feeds", "add", "https://example.org/feed.xml", "--name", "Example")
    shown = newsroom.ok("schedule", "show", env={
        "DIGEST_SCHEDULE__FEEDS_MINUTES": "20", "DIGEST_BOUNCES__HOST": "imap.example.org",
        "DIGEST_BOUNCES__USERNAME": "bounces", "DIGEST_BOUNCES__POLL_MINUTES": "10"}).stdout
    assert "Feed polling: every 20 minutes, 1 feed\n" in shown
    assert "Bounce mailbox: every 10 minutes (bounces at imap.example.org)\n" in shown




def add_due_one_shot_jobs(folder: Path, count: int) -> None:
    """Put `count` one-shot jobs whose time has passed into the store's job table, the way
    local-time waves that came due while the scheduler was down sit there. Each is a cheap
    stand-in (os.getpid): what matters is that the scheduler's first pass runs and removes
    them one by one, which makes that pass long enough to stop the scheduler inside it."""
    url = load_settings(folder / "digest.toml", environ={}).store_url
    # Written straight into the job store: a running scheduler would run them itself.
    # The never-started scheduler only lends the jobs its defaults.
    lender = BlockingScheduler(timezone=UTC)
    jobstore = SQLAlchemyJobStore(url=url, tablename="apscheduler_jobs")
    jobstore.start(lender, "default")
    try:
        # The scheduler process runs on the machine's clock: due is before its now.
        past = datetime.now(UTC) - timedelta(seconds=1)
        for i in range(count):
            job_id = f"digest-wave-test-{i}"
            if jobstore.lookup_job(job_id) is not None:
                jobstore.remove_job(job_id)
            jobstore.add_job(Job(lender, id=job_id, name=job_id, func="os:getpid", args=(),
                                 kwargs={}, trigger=DateTrigger(past), executor="default",
                                 misfire_grace_time=None, coalesce=True, max_instances=1,
                                 next_run_time=past))
    finally:
        jobstore.shutdown()


@pytest.mark.slow
def test_sigterm_at_any_early_moment_exits_0_without_a_traceback(
        digest: Digest, smtp: LoopbackSMTPServer, tmp_path: Path) -> None:
    # Stopped at once, or a few ms into start(): before, inside and after its first pass
    # over the start-up sweep and 300 due one-shot jobs. Before the fix a shutdown from
    # another thread could land inside that pass, which then raised JobLookupError while
    # removing a job that had just run: a traceback and exit 1.
    env = env_for(smtp, "0 8 * * mon")
    for delay in (0, 0.005, 0.01, 0.02, 0.05, 0.1):
        add_due_one_shot_jobs(tmp_path, 300)
        sched = Scheduler(tmp_path, env)
        sched.wait_for("scheduler started")
        time.sleep(delay)              # picks the moment to stop; nothing waits on it
        code = sched.stop(signal.SIGTERM)
        log = "\n".join(sched.lines)
        assert code == 0 and "Traceback" not in log, f"stopped after {delay}s:\n{log}"
        assert "scheduler stopped" in log, log


@pytest.mark.slow
@pytest.mark.judges
def test_the_scheduler_reads_the_bounce_mailbox_at_start(
        digest: Digest, smtp: LoopbackSMTPServer, tmp_path: Path) -> None:
    # A real Postfix report (5.1.1 for one address) in a real Dovecot's INBOX: the bounce
    # job runs as the scheduler starts and moves the report away. The report is about a
    # message this store never sent (no Message-ID of ours), so it is held for review.
    need_dovecot()
    (tmp_path / "subs.csv").write_text("email,name\nuserunknown@example.co.jp,Gone\n"
                                       "reader@example.org,Reader\n")
    digest.ok("subscribers", "import", str(tmp_path / "subs.csv"))
    report = need(DATA / "bounces" / "sisimai" / "rb-bsd-email-postfix-02.eml").read_bytes()
    server = Dovecot().start()
    try:
        inbox = server.add_user()
        inbox.deliver(report)
        env = env_for(smtp, "0 8 * * mon", DIGEST_BOUNCES__POLL_MINUTES="60", **inbox.env())
        sched = Scheduler(tmp_path, env)
        sched.wait_for("bounce mailbox: 1 read, 1 handled, 0 left")
        sched.wait_for("bounce mailbox: 1 message(s) held for review")
        assert sched.stop() == 0
        assert inbox.messages() == []
        assert inbox.messages("Processed") == [report]
    finally:
        server.stop()
    assert sorted(db_rows(tmp_path, "SELECT email, status FROM subscribers")) == [
        ("reader@example.org", "active"), ("userunknown@example.co.jp", "active")]
    assert db_rows(tmp_path, "SELECT summary, status FROM held_reports") == [
        ("hard: filtered@example.co.jp, userunknown@example.co.jp", "held")]
