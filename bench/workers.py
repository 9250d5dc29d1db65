"""Throughput of `digest worker` processes on PostgreSQL: 1, 2 and 4 workers.

    python bench/workers.py                    # 20,000 recipients, a throwaway cluster
    DIGEST_BENCH_POSTGRES=postgresql+psycopg://user@host/db python bench/workers.py

For each worker count: a fresh database, the sample articles, N subscribers,
`digest send --enqueue`, then that many `digest worker --until-done` processes sending
to a loopback SMTP sink (Postfix's smtp-sink when installed, else aiosmtpd). Prints
messages per second and the ratio to one worker.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Signs the links in each message (the edition is opened here, sent by the workers).
SECRET = "bench-" + "k" * 32
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import free_port  # noqa: E402
from send import prepare_store, start_sink  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from digest.config import load_settings  # noqa: E402
from digest.delivery.runner import enqueue_edition  # noqa: E402
from digest.store.db import Store  # noqa: E402


@contextmanager
def postgres() -> Iterator[str]:
    """An admin URL: DIGEST_BENCH_POSTGRES, or a throwaway local cluster."""
    if os.environ.get("DIGEST_BENCH_POSTGRES"):
        yield os.environ["DIGEST_BENCH_POSTGRES"]
        return
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if not bins:
        raise SystemExit("no PostgreSQL here: apt-get install postgresql, or set "
                         "DIGEST_BENCH_POSTGRES")
    pgbin = bins[-1]
    root = Path(tempfile.mkdtemp(prefix="digest-bench-pg-"))
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = free_port()
    subprocess.run(as_pg + [str(pgbin / "initdb"), "-D", str(root / "data"), "-A", "trust",
                            "-U", "postgres"], check=True, capture_output=True)
    subprocess.run(as_pg + [str(pgbin / "pg_ctl"), "-D", str(root / "data"), "-l",
                            str(root / "log"), "-w", "-o",
                            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 "
                            f"-c max_connections=200", "start"], check=True,
                   capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_pg + [str(pgbin / "pg_ctl"), "-D", str(root / "data"), "-m",
                                "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def run(admin: str, smtp_port: int, subscribers: int, workers: int, connections: int) -> float:
    name = f"digest_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    folder = Path(tempfile.mkdtemp(prefix="digest-bench-"))
    try:
        (folder / "digest.toml").write_text(
            f'[store]\nurl = "{url}"\n[smtp]\nport = {smtp_port}\nconnections = {connections}'
            f'\n[delivery]\nbatch_size = 100\n')
        settings = load_settings(folder / "digest.toml", environ={"DIGEST_SECRET_KEY": SECRET})
        prepare_store(settings, subscribers)
        store = Store.from_settings(settings)
        enqueue_edition(store, settings)
        store.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
        env["PYTHONPATH"] = str(ROOT)
        env["DIGEST_SECRET_KEY"] = SECRET
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-m", "digest", "worker", "--until-done",
                                   "--poll", "0.2"], cwd=folder, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for _ in range(workers)]
        for proc in procs:
            _out, err = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"a worker failed: {err.decode()[-500:]}")
        seconds = time.perf_counter() - start
        check = create_engine(url)
        with check.connect() as conn:
            sent = conn.execute(text("select count(*) from deliveries where status = 'sent'"
                                     )).scalar()
        check.dispose()
        if sent != subscribers:
            raise SystemExit(f"only {sent} of {subscribers} sent")
        return subscribers / seconds
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=4,
                        help="SMTP connections per worker")
    parser.add_argument("--sink", choices=["auto", "smtp-sink", "aiosmtpd"], default="auto")
    args = parser.parse_args()
    sink = start_sink(args.sink)
    try:
        with postgres() as admin:
            print(f"{args.subscribers:,} recipients on PostgreSQL, {args.connections} "
                  f"connections per worker, sink: {sink.name}, {os.cpu_count()} CPUs")
            base = None
            for workers in (1, 2, 4):
                rate = run(admin, sink.port, args.subscribers, workers, args.connections)
                base = base or rate
                print(f"{workers} worker{'s' if workers > 1 else ' '}  {rate:8,.0f} msg/s   "
                      f"x{rate / base:.2f} of one worker")
    finally:
        sink.proc.send_signal(signal.SIGTERM)
        sink.proc.wait()


if __name__ == "__main__":
    main()
