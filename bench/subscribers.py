"""Subscriber import at scale: rows/s of `digest subscribers import` for 100,000 generated
rows, and the latency of the one-click unsubscribes that `digest serve` answers meanwhile.

    .venv/bin/python bench/subscribers.py                      # 100,000 rows
    .venv/bin/python bench/subscribers.py --rows 20000 --old /tmp/old-checkout --rounds 3

The file has what real lists have: names (some with accents, some a spreadsheet would run
as a formula), topics, timezones, every 50th row unsubscribed, 1% of addresses twice
(merged), 0.5% rows that are no address (rejected). Before the import the store holds
--readers subscribers; while the import runs (its own process) one of them after the other
POSTs a one-click unsubscribe (RFC 8058) to `digest serve` on 127.0.0.1, one every 0.1 s.
Every answer must be a 200.

--old names a checkout of an older version (e.g. `git archive HEAD~3 | tar -x -C /tmp/old`):
both import the --old-rows file into new stores, alternating in rounds (the machine is
shared and noisy), with the unsubscribes running, and medians are printed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import digest_env, run_digest, unsubscribe_while

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-subscribers-secret-key-0123456789abcdef"
DOMAINS = ["example.org", "example.com", "mail.example.net", "uni.example.edu",
           "corp.example.co.uk", "example.de", "example.fr", "post.example.jp"]
FIRST = ["Ada", "Grace", "Alan", "Zoë", "Émile", "Søren", "Nadia", "Kwame", "Li", "Ana",
         "José", "Priya", "Olu", "Mette", "Yusuf", "Hana", "Björn", "Chloé", "Tomás", "Ines"]
LAST = ["Lovelace", "Hopper", "Turing", "Müller", "O'Brien", "Nakamura", "Okafor", "Silva",
        "Kowalski", "Andersen", "Dubois", "García", "Rossi", "Chen", "=HYPERLINK(x)"]
TOPICS = ["", "", "AI", "AI;Science", "World;Politics", "Technology", "Culture;Sports"]
ZONES = ["", "", "", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Europe/London"]


def make_csv(path: Path, rows: int, seed: int = 1) -> None:
    """Write rows generated rows (a header first) to path."""
    rng = random.Random(seed)
    lines = ["email,name,topics,timezone,status\n"]
    for i in range(rows):
        if rng.random() < 0.005:
            address = f"not-an-address-{i}"
        elif i > 100 and rng.random() < 0.01:
            address = f"Person{rng.randrange(i)}@{DOMAINS[0]}"          # there already
        else:
            address = f"person{i}.{rng.choice(FIRST)[:1].lower()}@{rng.choice(DOMAINS)}"
            address = address.translate(str.maketrans("zéës", "zees")).replace("ø", "o")
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        status = "unsubscribed" if i % 50 == 0 else ""
        cell = f'"{name}"' if "," in name else name
        lines.append(f"{address},{cell},{rng.choice(TOPICS)},{rng.choice(ZONES)},{status}\n")
    path.write_text("".join(lines), encoding="utf-8")


def new_store(code: Path, readers: int) -> Path:
    """A folder with a new store of `code`'s schema, holding readers subscribers."""
    folder = Path(tempfile.mkdtemp(prefix="bench-subscribers-"))
    run_digest(code, folder, SECRET, "init")
    (folder / "readers.csv").write_text("email,name\n" + "".join(
        f"reader{i}@example.org,Reader {i}\n" for i in range(readers)))
    run_digest(code, folder, SECRET, "subscribers", "import", "readers.csv")
    return folder


@dataclass
class Run:
    rows: int
    seconds: float = 0.0
    summary: str = ""
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds

    def line(self, name: str) -> str:
        lat = self.latencies
        unsubscribes = (f"{len(lat)} unsubscribes: median {statistics.median(lat) * 1000:.0f} "
                        f"ms, max {max(lat) * 1000:.0f} ms" if lat else "no unsubscribes")
        failed = f", {len(self.failures)} FAILED ({self.failures[0]})" if self.failures else ""
        return (f"{name:>4} {self.rows:>7} rows: {self.seconds:6.1f} s, {self.rate:6.0f} rows/s;"
                f" {unsubscribes}{failed}\n       {self.summary}")


def _import(code: Path, folder: Path, people: Path, run: Run) -> None:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "digest", "subscribers", "import",
                             str(people)], cwd=folder, env=digest_env(code, SECRET),
                            capture_output=True, text=True, check=False)
    run.seconds = time.perf_counter() - start
    run.summary = next((line for line in result.stdout.splitlines()
                        if line.startswith("Imported")), result.stderr.strip()[-300:])
    # 3 is "partly done": the rows planted bad (not an address) are refused, the rest in.
    if result.returncode not in (0, 3):
        run.failures.append(f"import exit {result.returncode}")


def import_with_unsubscribes(code: Path, people: Path, rows: int, readers: int) -> Run:
    """Import people into a new store while readers unsubscribe with one click, one after
    the other, through `digest serve`."""
    folder = new_store(code, readers)
    run = Run(rows)
    importer = threading.Thread(target=_import, args=(code, folder, people, run))
    done = unsubscribe_while(code, folder, SECRET, importer, readers, pause=0.1, timeout=120)
    run.latencies += done.latencies
    run.failures += done.failures
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--readers", type=int, default=2000,
                        help="subscribers there before, who unsubscribe during the import")
    parser.add_argument("--old", type=Path, help="a checkout of the version to compare with")
    parser.add_argument("--old-rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-people-"))

    if args.old:
        people = work / f"people{args.old_rows}.csv"
        make_csv(people, args.old_rows)
        runs: dict[str, list[Run]] = {"old": [], "new": []}
        for _ in range(args.rounds):
            for name, code in (("old", args.old.resolve()), ("new", ROOT)):
                run = import_with_unsubscribes(code, people, args.old_rows, args.readers)
                runs[name].append(run)
                print(run.line(name), flush=True)
        for name, done in runs.items():
            latencies = [lat for run in done for lat in run.latencies]
            print(f"{name:>4} {args.old_rows} rows, median of {len(done)} rounds: "
                  f"{statistics.median(r.seconds for r in done):.1f} s, "
                  f"{statistics.median(r.rate for r in done):.0f} rows/s; unsubscribes "
                  f"median {statistics.median(latencies) * 1000:.0f} ms, max "
                  f"{max(latencies) * 1000:.0f} ms, "
                  f"{sum(len(r.failures) for r in done)} failed", flush=True)

    people = work / f"people{args.rows}.csv"
    make_csv(people, args.rows)
    run = import_with_unsubscribes(ROOT, people, args.rows, args.readers)
    print(run.line("new"))
    target = run.rate >= 10_000 and max(run.latencies, default=0) < 1 and not run.failures
    print(f"target (>= 10,000 rows/s, every unsubscribe answered in < 1 s): "
          f"{'met' if target else 'MISSED'}")


if __name__ == "__main__":
    main()
