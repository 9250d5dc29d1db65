"""Sending at wire speed: the whole `digest send` process against a raw smtplib blaster and
Postfix's smtp-source, unsigned and DKIM-signed.

    python bench/send.py                          # N = 20,000 and 100,000, 3 rounds
    python bench/send.py --quick                  # N = 20,000, 3 rounds
    python bench/send.py --sizes 2000 --rounds 1  # a quick check that everything works

How long it takes on this 2-core machine (1,200 to 2,800 msg/s by contender):
`--sizes 2000 --rounds 1` about 15 seconds, one round at 20,000 about 70 seconds,
`--quick` about 3.5 minutes, the default run about 20 minutes (each round sends
600,000 messages: 5 contenders x 120,000).

Every contender run gets its own fresh sink on 127.0.0.1 (Postfix's smtp-sink, `apt-get
install postfix`; aiosmtpd only when smtp-sink is missing) and is timed from spawn to exit,
its peak RSS read from wait4(). The contenders, for each N:

  digest off      `python -m digest send --yes` in a folder of its own: a digest.toml
                  pointing at the sink with `[smtp] connections = 4`, and a copy of a
                  store prepared once per N (N active subscribers, each taking the whole
                  edition so that every message has the other contenders' size; the
                  sample articles). It creates the edition and its ledger, renders
                  each variant once, builds and sends every message, records every result.
                  Afterwards every delivery in the copy must be "sent": N of them.
  digest rsa      the same with `[dkim]` signing RSA-2048 (rsa-sha256).
  digest ed25519  the same with `[dkim]` domain, ed25519_selector and ed25519_private_key
                  only (ed25519-sha256, no RSA key); "not supported by this version"
                  when the config is refused.
  smtplib         one real, unsigned message of the edition (the all-topics variant)
                  sent N times over 4 persistent smtplib connections from 4 threads, in a
                  process of its own: the ceiling for Python on this machine and sink.
  smtp-source     Postfix's C load generator sending the same message file N times
                  over 4 persistent sessions (-s 4 -d): the ceiling of the sink.

Each round runs every N and, within it, the contenders in an order rotated from round to
round; the tables give medians over the rounds, msg/s = N / median seconds, and the
highest peak RSS seen. Linux carries a parent's peak RSS into its child's ru_maxrss, so
this script never imports digest itself (a child process prepares the stores) and prints
its own peak: a child's figure at that floor means "this much or less".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-" + "k" * 32
CONNECTIONS = 4
MODES = ("off", "rsa", "ed25519")
CONTENDERS = ("digest off", "digest rsa", "digest ed25519", "smtplib", "smtp-source")
# Every subscriber takes the whole edition: digest's messages are then the same bytes as
# the other contenders' but for each subscriber's name, address and links.
TOPIC_CHOICES: list[list[str]] = [[]]
SMTP_SOURCE = "/usr/sbin/smtp-source"
UNSUPPORTED = "ed25519: not supported by this version"


# --- in the bench process: no digest imports here (see the docstring) -------------------

@dataclass
class Sink:
    proc: subprocess.Popen[bytes]
    port: int
    name: str


def start_sink(kind: str) -> Sink:
    port = free_port()
    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if kind in ("auto", "smtp-sink") and os.path.exists(sink):
        cmd = [sink]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        proc = subprocess.Popen([*cmd, f"127.0.0.1:{port}", "1024"])
        name = "Postfix smtp-sink"
    elif kind == "smtp-sink":
        raise SystemExit("smtp-sink is not installed (apt-get install postfix)")
    else:
        code = ("import time\n"
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
            return Sink(proc, port, name)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the sink did not start on port {port}")


@contextmanager
def fresh_sink(kind: str) -> Iterator[Sink]:
    sink = start_sink(kind)
    try:
        yield sink
    finally:
        sink.proc.send_signal(signal.SIGTERM)
        try:
            sink.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sink.proc.kill()
            sink.proc.wait()


@dataclass
class Run:
    seconds: float
    rss_mb: float
    returncode: int
    output: str


def spawn(cmd: Sequence[str], cwd: Path, env: dict[str, str]) -> Run:
    """Run cmd; seconds from spawn to exit and its peak RSS (ru_maxrss from wait4)."""
    log = cwd / "output.log"
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    return Run(seconds, usage.ru_maxrss / 1024, proc.returncode, text)


def child_env(**extra: str) -> dict[str, str]:
    """This environment without DIGEST_* settings, digest importable, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def toml_string(value: str) -> str:
    return json.dumps(value)   # a JSON string is a valid TOML basic string


def write_config(folder: Path, port: int, mode: str, keys: Path) -> None:
    lines = ['[store]', 'url = "sqlite:///digest.db"', '',
             '[smtp]', 'host = "127.0.0.1"', f'port = {port}',
             f'connections = {CONNECTIONS}', '']
    if mode == "rsa":
        lines += ['[dkim]', 'selector = "bench"', 'domain = "example.org"',
                  f'private_key = {toml_string(str(keys / "dkim-rsa.pem"))}', '']
    elif mode == "ed25519":
        # Ed25519 alone: `selector` and `private_key` name the RSA key, so neither is set.
        lines += ['[dkim]', 'domain = "example.org"',
                  f'ed25519_private_key = {toml_string(str(keys / "dkim-ed25519.pem"))}',
                  'ed25519_selector = "bench-ed"', '']
    (folder / "digest.toml").write_text("\n".join(lines))


@dataclass
class Prepared:
    n: int
    folder: Path
    message: Path
    envelope_from: str
    size_kb: float
    mean_kb: float
    variants_kb: dict[str, float]


def prepare(base: Path, n: int) -> Prepared:
    """The store for N (and the sample message), made once by a child process."""
    folder = base / f"store-{n}"
    folder.mkdir()
    write_config(folder, 25, "off", base)
    out = subprocess.run([sys.executable, __file__, "--prepare", str(folder), str(n)],
                         cwd=folder, env=child_env(DIGEST_SECRET_KEY=SECRET), check=True,
                         capture_output=True, text=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    return Prepared(n, folder, folder / "message.eml", info["envelope_from"],
                    info["size"] / 1024, info["mean"] / 1024,
                    {k: v / 1024 for k, v in info["variants"].items()})


def deliveries(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status")
        return {str(status): int(count) for status, count in rows}
    except sqlite3.Error as exc:
        return {f"unreadable store ({exc})": 0}
    finally:
        conn.close()


@dataclass
class Outcome:
    run: Run | None = None
    failure: str = ""
    unsupported: bool = False


def run_digest(p: Prepared, mode: str, sink: Sink, base: Path) -> Outcome:
    folder = Path(tempfile.mkdtemp(prefix=f"digest-{mode}-", dir=base))
    try:
        for name in ("digest.db", "digest.db-wal"):
            if (p.folder / name).exists():
                shutil.copyfile(p.folder / name, folder / name)
        write_config(folder, sink.port, mode, base)
        run = spawn([sys.executable, "-m", "digest", "send", "--yes"], folder,
                    child_env(DIGEST_SECRET_KEY=SECRET))
        counts = deliveries(folder / "digest.db")
        if run.returncode != 0:
            refused = "[dkim]" in run.output or "ed25519" in run.output.lower()
            if mode == "ed25519" and refused and not counts:
                return Outcome(unsupported=True)
            return Outcome(failure=f"exit {run.returncode}: {tail(run.output)}")
        if counts != {"sent": p.n}:
            return Outcome(failure=f"deliveries {counts}, expected {{'sent': {p.n}}}; "
                                   f"{tail(run.output)}")
        return Outcome(run)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_smtplib(p: Prepared, sink: Sink, base: Path) -> Outcome:
    run = spawn([sys.executable, __file__, "--blast", str(sink.port), str(p.n),
                 str(CONNECTIONS), str(p.message), p.envelope_from], base, child_env())
    if run.returncode != 0:
        return Outcome(failure=f"exit {run.returncode}: {tail(run.output)}")
    return Outcome(run)


def run_smtp_source(p: Prepared, sink: Sink, base: Path) -> Outcome:
    if not os.path.exists(SMTP_SOURCE):
        return Outcome(failure=f"{SMTP_SOURCE} is not installed (apt-get install postfix)")
    # -F sends the file's lines with CRLF appended (and dot-stuffed); -d keeps each of the
    # -s sessions open for the next message, as digest and the blaster do.
    run = spawn([SMTP_SOURCE, "-d", "-s", str(CONNECTIONS), "-m", str(p.n),
                 "-F", str(p.message.with_suffix(".lf")), "-f", "sender@example.org",
                 "-t", "reader@example.org", f"127.0.0.1:{sink.port}"], base, child_env())
    if run.returncode != 0:
        return Outcome(failure=f"exit {run.returncode}: {tail(run.output)}")
    return Outcome(run)


def tail(text: str, lines: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


@dataclass
class Results:
    runs: dict[tuple[int, str], list[Run]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    unsupported: bool = False

    def median(self, n: int, contender: str) -> float | None:
        runs = self.runs.get((n, contender))
        return statistics.median(r.seconds for r in runs) if runs else None

    def rss(self, n: int, contender: str) -> float | None:
        runs = self.runs.get((n, contender))
        return max(r.rss_mb for r in runs) if runs else None


def run_one(contender: str, p: Prepared, args: argparse.Namespace, base: Path) -> Outcome:
    with fresh_sink(args.sink) as sink:
        if contender.startswith("digest "):
            return run_digest(p, contender.split()[1], sink, base)
        if contender == "smtplib":
            return run_smtplib(p, sink, base)
        return run_smtp_source(p, sink, base)


def run_rounds(prepared: Sequence[Prepared], args: argparse.Namespace, base: Path) -> Results:
    results = Results()
    for r in range(args.rounds):
        for p in prepared:
            k = r % len(CONTENDERS)
            for contender in CONTENDERS[k:] + CONTENDERS[:k]:
                if contender == "digest ed25519" and results.unsupported:
                    continue
                outcome = run_one(contender, p, args, base)
                if outcome.unsupported:
                    results.unsupported = True
                    print(UNSUPPORTED, flush=True)
                    continue
                if outcome.run is None:
                    message = f"round {r + 1}, N={p.n:,}, {contender}: {outcome.failure}"
                    results.failures.append(message)
                    print(f"FAILED {message}", flush=True)
                    continue
                results.runs.setdefault((p.n, contender), []).append(outcome.run)
                print(f"round {r + 1}  N={p.n:,}  {contender:<15} {outcome.run.seconds:7.2f} s"
                      f"  {p.n / outcome.run.seconds:7,.0f} msg/s"
                      f"  {outcome.run.rss_mb:5.0f} MB", flush=True)
    return results


def ratio_line(label: str, num: float | None, den: float | None, target: float) -> str:
    """num and den are median seconds; the ratio is of msg/s (den / num)."""
    if num is None or den is None:
        return f"  {label:<30} n/a"
    value = den / num
    verdict = "ok" if value >= target else "BELOW TARGET"
    return f"  {label:<30} {value:5.2f}   (target >= {target}: {verdict})"


def report(prepared: Sequence[Prepared], results: Results, rounds: int, floor: float) -> None:
    for p in prepared:
        print(f"\nN = {p.n:,}  (medians of {rounds} round{'s' * (rounds != 1)})")
        print(f"  {'contender':<15} {'median s':>9} {'msg/s':>9} {'peak RSS MB':>12}")
        for contender in CONTENDERS:
            seconds = results.median(p.n, contender)
            if seconds is None:
                note = UNSUPPORTED.split(": ")[1] if (contender == "digest ed25519"
                                                       and results.unsupported) else "failed"
                print(f"  {contender:<15} {note:>9}")
                continue
            rss = results.rss(p.n, contender) or 0.0
            shown = f"<= {floor:.0f}" if rss <= floor + 1 else f"{rss:.0f}"
            print(f"  {contender:<15} {seconds:9.2f} {p.n / seconds:9,.0f} {shown:>12}")
        m = {c: results.median(p.n, c) for c in CONTENDERS}
        print(ratio_line("digest(off) / smtplib", m["digest off"], m["smtplib"], 0.9))
        print(ratio_line("digest(off) / smtp-source", m["digest off"], m["smtp-source"], 0.7))
        print(ratio_line("digest(rsa) / digest(off)", m["digest rsa"], m["digest off"], 0.8))
        print(ratio_line("digest(ed25519) / digest(off)", m["digest ed25519"],
                         m["digest off"], 0.8))
    if len(prepared) > 1:
        first, last = prepared[0].n, prepared[-1].n
        for contender in CONTENDERS[:3]:
            a, b = results.rss(first, contender), results.rss(last, contender)
            if a and b:
                print(f"peak RSS {contender}: {a:.0f} MB at {first:,} -> {b:.0f} MB at "
                      f"{last:,} ({b / a:.2f}x; flat means about 1.0)")


def self_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(args: argparse.Namespace) -> int:
    if args.quick:
        args.sizes, args.rounds = [20_000], 3
    base = Path(tempfile.mkdtemp(prefix="digest-bench-"))
    try:
        prepared = [prepare(base, n) for n in args.sizes]
        first = prepared[0]
        with fresh_sink(args.sink) as sink:
            sink_name = sink.name
        print(f"sizes {', '.join(f'{p.n:,}' for p in prepared)}; {args.rounds} round(s); "
              f"{CONNECTIONS} connections; sink: {sink_name}; {os.cpu_count()} CPUs")
        print(f"message size {first.size_kb:.1f} KB: the all-topics variant (unsigned) that "
              f"smtplib and smtp-source send N times, and digest to every subscriber "
              f"({first.mean_kb:.1f} KB on average with each one's name and links)")
        results = run_rounds(prepared, args, base)
        floor = self_peak_mb()
        report(prepared, results, args.rounds, floor)
        print(f"\nPeak RSS of this bench process: {floor:.0f} MB (the floor of every child's "
              f"ru_maxrss figure)")
        for failure in results.failures:
            print(f"FAILED {failure}")
        return 1 if results.failures else 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- child processes ---------------------------------------------------------------------

def blast(port: int, total: int, connections: int, path: Path, sender: str) -> None:
    """The raw blaster: one message, total times, over persistent connections."""
    import smtplib

    message = path.read_bytes()
    sent = [0] * connections
    errors: list[BaseException] = []

    def work(first: int) -> None:
        try:
            smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
            for i in range(first, total, connections):
                smtp.sendmail(sender, [f"reader{i}@example.org"], message)
                sent[first] += 1
            smtp.quit()
        except (OSError, smtplib.SMTPException) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors or sum(sent) != total:
        raise SystemExit(f"sent {sum(sent)} of {total}: {errors[:1]}")


def write_keys(folder: Path) -> None:
    """The DKIM keys (PEM, PKCS#8), once per bench run: RSA-2048 and Ed25519."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    keys: dict[str, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey] = {
        "dkim-rsa.pem": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "dkim-ed25519.pem": ed25519.Ed25519PrivateKey.generate()}
    for name, key in keys.items():
        if not (folder / name).exists():
            (folder / name).write_bytes(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))


def prepare_store(settings: Any, subscribers: int) -> None:
    """Fill the store of settings (created when new): the sample articles, and
    `subscribers` active subscribers choosing TOPIC_CHOICES in turn."""
    from sqlalchemy import insert

    from digest.content.topics import TopicClassifier
    from digest.ingest import import_files
    from digest.resources import package_resource
    from digest.store.db import Store
    from digest.store.models import Subscriber, SubscriberStatus

    store = Store.from_settings(settings)
    try:
        import_files(store.writes, TopicClassifier.from_settings(settings), store.clock,
                     [package_resource("data/sample_articles.json")])
        now = store.clock.now()
        with store.engine.begin() as conn:
            conn.execute(insert(Subscriber), [
                {"email": f"reader{i}@example.org", "email_key": f"reader{i}@example.org",
                 "name": f"Reader {i}", "status": SubscriberStatus.ACTIVE,
                 "topics": TOPIC_CHOICES[i % len(TOPIC_CHOICES)], "token_version": 1,
                 "hard_bounces": 0, "created_at": now, "updated_at": now}
                for i in range(subscribers)])
    finally:
        store.close()


def prepare_child(folder: Path, subscribers: int) -> None:
    """A store with the sample articles and `subscribers` active subscribers, and one real
    unsigned message of its next edition (message.eml, CRLF; message.lf for smtp-source)."""
    from digest.config import load_settings
    from digest.content.edition import ALL_TOPICS, effective_variant
    from digest.mail.message import Recipient, message_id, variant_template
    from digest.store.articles import upcoming_edition
    from digest.store.db import Store

    write_keys(folder.parent)
    settings = load_settings(folder / "digest.toml")
    prepare_store(settings, subscribers)
    store = Store.from_settings(settings)
    now = store.clock.now()
    number, articles = upcoming_edition(store, now)
    store.close()
    topics = {a.topic for a in articles}
    sizes: dict[str, int] = {}
    lengths: list[int] = []
    message = b""
    for i, chosen in enumerate(TOPIC_CHOICES):
        variant = effective_variant(chosen, topics)
        if variant is None:
            raise SystemExit(f"subscribers choosing {chosen} would be skipped: no such "
                             f"articles in the sample")
        template = variant_template(settings, articles, number, now, variant, edition_id=1,
                                    clock=store.clock)
        built = template.build(Recipient(i + 1, f"reader{i}@example.org", f"Reader {i}", 1,
                                         message_id(settings, 1, i + 1)))
        sizes["all" if variant == ALL_TOPICS else variant] = len(built)
        lengths.append(len(built))
        if variant == ALL_TOPICS:
            message, sender = built, template.envelope_from
    (folder / "message.eml").write_bytes(message)
    (folder / "message.lf").write_bytes(message.replace(b"\r\n", b"\n"))
    print(json.dumps({"size": len(message), "envelope_from": sender, "variants": sizes,
                      "mean": sum(lengths) / len(lengths)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20000,100000",
                        type=lambda s: [int(x) for x in s.split(",")],
                        help="comma-separated subscriber counts (default 20000,100000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="--sizes 20000 --rounds 3")
    parser.add_argument("--sink", choices=["auto", "smtp-sink", "aiosmtpd"], default="auto")
    parser.add_argument("--prepare", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--blast", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare_child(Path(args.prepare[0]), int(args.prepare[1]))
    elif args.blast:
        port, total, connections, path, sender = args.blast
        blast(int(port), int(total), int(connections), Path(path), sender)
    else:
        sys.exit(bench(args))


if __name__ == "__main__":
    main()
