"""Tracked "read more" redirects against a static page of the same server: requests per
second of `/r/<token>` (click counts on, a sent edition, every request a reader's GET
that counts or repeats) and of `/unsubscribe` (a template, no store), both answered by a
real `digest serve` process of the checkout measured.

    .venv/bin/python bench/clicks.py                          # this checkout
    .venv/bin/python bench/clicks.py --code /tmp/old-checkout --rounds 5

A few keep-alive HTTP clients (threads, one httpx.Client each) send --requests requests
in all, side by side; the contenders alternate in rounds (the machine is shared and
noisy) and the medians and their ratio are printed. The clicks come from --networks
client addresses (X-Forwarded-For, the server trusting one proxy), spread over the
edition's links, so they are what readers' clicks look like, not one scanner's flood.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from common import digest_env, free_port, run_digest

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-clicks-secret-key-0123456789abcdef012345"
BROWSER = ("Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0")


def sent_edition(code: Path) -> tuple[Path, list[str]]:
    """A folder whose store holds edition 1, sent with click counts on to 3 readers
    over a loopback SMTP server; and the paths of its tracked links."""
    sys.path.insert(0, str(code))
    from digest.mail.loopback import LoopbackSMTPServer
    from digest.tokens import ClickSigner

    folder = Path(tempfile.mkdtemp(prefix="bench-clicks-"))
    run_digest(code, folder, SECRET, "init")
    sample = code / "digest" / "data"
    run_digest(code, folder, SECRET, "articles", "import", str(sample / "sample_articles.json"))
    (folder / "readers.csv").write_text("email,name\n" + "".join(
        f"reader{i}@example.org,Reader {i}\n" for i in range(3)))
    run_digest(code, folder, SECRET, "subscribers", "import", "readers.csv")
    smtp = LoopbackSMTPServer(headers_only=True).start()
    try:
        subprocess.run([sys.executable, "-m", "digest", "send", "--yes"], cwd=folder,
                       env=environment(code, DIGEST_SMTP__HOST="127.0.0.1",
                                       DIGEST_SMTP__PORT=str(smtp.port)),
                       capture_output=True, check=True)
    finally:
        smtp.stop()
    with sqlite3.connect(folder / "digest.db") as db:
        ids = [i for (i,) in db.execute(
            "select id from articles where edition_id = "
            "(select id from editions where number = 1) and removed_at is null")]
    signer = ClickSigner(SECRET.encode())
    return folder, [f"/r/{signer.make(1, i)}" for i in ids]


def environment(code: Path, **extra: str) -> dict[str, str]:
    """digest's environment: click counts on, behind one proxy (X-Forwarded-For)."""
    return {**digest_env(code, SECRET), "DIGEST_TRACKING__CLICKS": "true",
            "DIGEST_WEB__TRUSTED_PROXIES": "1", **extra}


def start(code: Path, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "digest", "serve", "--port", str(port)],
                              cwd=folder, env=environment(code),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=5) as client:
        for _ in range(400):
            try:
                client.get(f"{base}/unsubscribe")
                return server, base
            except httpx.TransportError:
                time.sleep(0.05)
    server.terminate()
    raise SystemExit("digest serve did not answer within 20 s")


def load(base: str, paths: list[str], requests: int, clients: int, networks: int,
         expect: int) -> float:
    """Requests per second of `requests` GETs of paths (round robin) by `clients`
    keep-alive clients side by side; every answer must be `expect`."""
    failures: list[str] = []
    share = requests // clients

    def work(n: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            for i in range(share):
                k = n * share + i
                response = client.get(paths[k % len(paths)], headers={
                    "User-Agent": BROWSER,
                    "X-Forwarded-For": f"10.{k % networks // 65536}."
                                       f"{k % networks // 256 % 256}.{k % networks % 256}"})
                if response.status_code != expect:
                    failures.append(f"{paths[k % len(paths)]}: {response.status_code}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - begin
    if failures:
        raise SystemExit(f"{len(failures)} bad answers, e.g. {failures[0]}")
    return share * clients / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout measured")
    parser.add_argument("--requests", type=int, default=2000, help="per contender per round")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--networks", type=int, default=5000, help="client addresses")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    folder, links = sent_edition(args.code.resolve())
    server, base = start(args.code.resolve(), folder)
    rates: dict[str, list[float]] = {"static /unsubscribe": [], "click /r/": []}
    try:
        load(base, ["/unsubscribe"], 200, args.clients, args.networks, 200)    # warm up
        for n in range(args.rounds):
            for name in (list(rates) if n % 2 == 0 else list(rates)[::-1]):
                paths, expect = (["/unsubscribe"], 200) if name.startswith("static") \
                    else (links, 302)
                rates[name].append(load(base, paths, args.requests, args.clients,
                                        args.networks, expect))
            print(f"round {n + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in
                                                  rates.items()), flush=True)
    finally:
        server.terminate()
        server.wait()
    with sqlite3.connect(folder / "digest.db") as db:
        (rows,) = db.execute("select count(*) from clicks").fetchone()
    medians = {k: statistics.median(v) for k, v in rates.items()}
    for name, median in medians.items():
        print(f"{name:20} median {median:8.0f} requests/s")
    ratio = medians["click /r/"] / medians["static /unsubscribe"]
    print(f"clicks / static: {ratio:.2f}x  (rows in clicks afterwards: {rows}; "
          f"{args.clients} keep-alive clients, {args.requests} requests a round, "
          f"{args.rounds} rounds, code {args.code})")


if __name__ == "__main__":
    main()
