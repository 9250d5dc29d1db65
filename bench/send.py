"""Sending throughput: digest's pipeline against the ceiling and the naive way.

    python bench/send.py                      # 10,000 subscribers
    python bench/send.py --subscribers 100000

Everything sends to a loopback SMTP sink in a separate process: Postfix's smtp-sink when
installed (apt-get install postfix), else aiosmtpd. Prints messages per second for

  (a) digest: create the edition and its ledger, render each variant once, build every
      message, send over `connections` pooled connections, record every result;
  (b) raw smtplib: one pre-built message sent N times over the same number of
      persistent connections: the ceiling of this machine and sink;
  (c) naive: Jinja2 + premailer + EmailMessage per subscriber and a new connection per
      message (timed on a sample, same number of threads);

the ratios a/b and a/c, and digest's peak RSS (its own process).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from digest.config import Settings, load_settings, with_overrides  # noqa: E402
from digest.content.edition import build_content  # noqa: E402
from digest.content.topics import TopicClassifier  # noqa: E402
from digest.delivery.editions import open_edition  # noqa: E402
from digest.delivery.sender import Sender  # noqa: E402
from digest.ingest import import_files  # noqa: E402
from digest.mail.message import (  # noqa: E402
    SMTP_POLICY,
    MessageTemplate,
    Recipient,
    build_email_message,
    message_id,
)
from digest.mail.render import Renderer  # noqa: E402
from digest.mail.transport import SmtpTransport  # noqa: E402
from digest.resources import package_resource  # noqa: E402
from digest.store.articles import new_articles  # noqa: E402
from digest.store.db import Store  # noqa: E402
from digest.store.models import Subscriber, SubscriberStatus, utcnow  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sink(kind: str) -> tuple[subprocess.Popen[bytes], int, str]:
    port = free_port()
    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if kind in ("auto", "smtp-sink") and os.path.exists(sink):
        cmd = [sink]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        proc = subprocess.Popen(cmd + [f"127.0.0.1:{port}", "1024"])
        name = "Postfix smtp-sink"
    elif kind == "smtp-sink":
        raise SystemExit("smtp-sink is not installed (apt-get install postfix)")
    else:
        code = ("import sys, time\n"
                "from aiosmtpd.controller import Controller\n"
                "class H:\n"
                "    async def handle_DATA(self, s, se, e): return '250 OK'\n"
                f"c = Controller(H(), hostname='127.0.0.1', port={port}); c.start()\n"
                "time.sleep(10**6)\n")
        proc = subprocess.Popen([sys.executable, "-c", code])
        name = "aiosmtpd"
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port, name
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the sink did not start on port {port}")


def settings_for(folder: Path, port: int, connections: int) -> Settings:
    settings = load_settings(None, environ={"DIGEST_STORE__URL":
                                            f"sqlite:///{folder / 'bench.db'}",
                                            "DIGEST_SECRET_KEY": "bench-" + "k" * 32})
    return with_overrides(settings, smtp={"port": port, "connections": connections,
                                          "timeout": 30.0},
                          delivery={"batch_size": 100})


def prepare_store(folder: Path, subscribers: int, settings: Settings) -> None:
    store = Store.from_settings(settings)
    import_files(store.writes, TopicClassifier(settings.topics, "More stories"),
                 [package_resource("data/sample_articles.json")])
    topics = [[], [], ["AI"], ["Science", "Technology"], ["Business"]]
    now = utcnow()
    with store.engine.begin() as conn:
        conn.execute(insert(Subscriber), [
            {"email": f"reader{i}@example.org", "email_key": f"reader{i}@example.org",
             "name": f"Reader {i}", "status": SubscriberStatus.ACTIVE,
             "topics": topics[i % len(topics)], "token_version": 1, "hard_bounces": 0,
             "created_at": now, "updated_at": now} for i in range(subscribers)])
    store.close()


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM belongs to this program alone; ru_maxrss would also
    count the parent's peak, which Linux carries across fork and exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_pipeline(folder: Path, port: int, connections: int) -> None:
    """(a), run in its own process so its peak RSS is its own."""
    settings = settings_for(folder, port, connections)
    store = Store.from_settings(settings)
    start = time.perf_counter()
    edition, _ = open_edition(store, settings, utcnow())
    ledger_done = time.perf_counter()
    sender = Sender(store, settings, SmtpTransport(settings.smtp))
    counts = sender.run(edition_id=edition.id)
    end = time.perf_counter()
    print(json.dumps({"seconds": end - start, "ledger_seconds": ledger_done - start,
                      "sent": counts["sent"], "variants": sender.rendered_variants,
                      "maxrss_mb": peak_rss_mb()}))


def run_pipeline(folder: Path, port: int, connections: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", str(folder), str(port),
                          str(connections)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def sample_template(settings: Settings) -> MessageTemplate:
    store = Store.from_settings(settings)
    now = utcnow()
    with store.sessions() as session:
        articles = new_articles(session, now) or list(session.scalars(
            __import__("sqlalchemy").select(__import__("digest.models").models.Article)))
    content = build_content(articles, settings, 1, now)
    return MessageTemplate(settings, Renderer(settings).render(content), "", 1)


def threaded(total: int, connections: int, work: callable) -> float:  # type: ignore[valid-type]
    """Seconds for `total` calls of work(i), spread over `connections` threads."""
    def run(first: int) -> None:
        work(first, range(first, total, connections))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def run_raw(port: int, connections: int, total: int, message: bytes) -> float:
    def work(_first: int, indexes: range) -> None:
        smtp = smtplib.SMTP("127.0.0.1", port)
        for i in indexes:
            smtp.sendmail("digest@example.org", [f"reader{i}@example.org"], message)
        smtp.quit()
    return total / threaded(total, connections, work)


def run_naive(port: int, connections: int, total: int, settings: Settings) -> float:
    store = Store.from_settings(settings)
    now = utcnow()
    from sqlalchemy import select

    from digest.store.models import Article
    with store.sessions() as session:
        articles = list(session.scalars(select(Article)))
    content = build_content(articles, settings, 1, now)

    def work(_first: int, indexes: range) -> None:
        for i in indexes:
            # Everything per subscriber: Jinja2, premailer, the email package, a connection.
            rendered = Renderer(settings).render(content)
            template = MessageTemplate(settings, rendered, "", 1)
            r = Recipient(i, f"reader{i}@example.org", f"Reader {i}", 1,
                          message_id(settings, 1, i))
            data = build_email_message(template, r).as_bytes(policy=SMTP_POLICY)
            smtp = smtplib.SMTP("127.0.0.1", port)
            smtp.sendmail("digest@example.org", [r.email], data)
            smtp.quit()
    return total / threaded(total, connections, work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--naive-sample", type=int, default=300,
                        help="messages timed for the naive pipeline (it is slow)")
    parser.add_argument("--sink", choices=["auto", "smtp-sink", "aiosmtpd"], default="auto")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_pipeline(Path(args.child[0]), int(args.child[1]), int(args.child[2]))
        return

    sink, port, sink_name = start_sink(args.sink)
    folder = Path(tempfile.mkdtemp(prefix="digest-bench-"))
    try:
        settings = settings_for(folder, port, args.connections)
        prepare_store(folder, args.subscribers, settings)
        message = sample_template(settings).build(
            Recipient(1, "reader1@example.org", "Reader 1", 1, message_id(settings, 1, 1)))
        n, c = args.subscribers, args.connections
        print(f"{n:,} subscribers, {c} connections, sink: {sink_name}, "
              f"message size {len(message) / 1024:.1f} KB, {os.cpu_count()} CPUs")

        raw = run_raw(port, c, n, message)
        a = run_pipeline(folder, port, c)
        pipeline = a["sent"] / a["seconds"]
        naive = run_naive(port, c, args.naive_sample, settings)

        print(f"(a) digest pipeline   {pipeline:9,.0f} msg/s   ({a['sent']:,} sent in "
              f"{a['seconds']:.2f} s, of which edition + ledger {a['ledger_seconds']:.2f} s; "
              f"{a['variants']:.0f} variants rendered)")
        print(f"(b) raw smtplib       {raw:9,.0f} msg/s   (pre-built bytes, same connections)")
        print(f"(c) naive pipeline    {naive:9,.1f} msg/s   (sample of {args.naive_sample})")
        print(f"a/b = {pipeline / raw:.2f}   (target >= 0.7)")
        print(f"a/c = {pipeline / naive:.0f}   (target >= 20)")
        print(f"digest peak RSS = {a['maxrss_mb']:.0f} MB   (target < 150 MB at 100,000)")
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
