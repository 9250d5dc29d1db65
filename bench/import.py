"""Article import at scale: seconds, items/s and peak RSS for 5k/20k/50k feed items, and
the latency of one-click unsubscribes made while the 50k import runs.

    .venv/bin/python bench/import.py                      # 5k, 20k, 50k (+ the 2k baseline)
    .venv/bin/python bench/import.py --sizes 2000 --rounds 3 --old /tmp/old-checkout

Items are RSS feed files of 1,000 items each: titles and bodies cut from the real news
text in ../shared/corpus (else a built-in word list), with made-up names in the titles;
about 4% of them the same story re-reported by another feed under a slightly edited title,
2% exact re-posts with a tracking-tagged link. Each import runs as `digest articles import <dir>`
in its own process, so its peak RSS (VmHWM, from wait4) is the importer's alone.

--old names a checkout of an older version (e.g. `git worktree add /tmp/old HEAD~1`): it
imports the --baseline-size set too, alternating with this version in rounds (the machine
is shared and noisy), and medians are printed.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

from common import digest_env, run_digest, unsubscribe_while

ROOT = Path(__file__).resolve().parent.parent
CORPUS_TEXT = ROOT / "tests" / "data" / "corpus" / "pages" / "expected"
AG_NEWS = ROOT / "tests" / "data" / "ingest" / "ag_news_train_sample.csv"
SECRET = "bench-import-secret-key-0123456789abcdef"
ITEMS_PER_FEED = 1000
_FALLBACK_WORDS = [
    "council", "vote", "budget", "city", "plan", "water", "energy", "price", "market",
    "school", "health", "court", "ruling", "minister", "election", "report", "study",
    "climate", "storm", "rail", "strike", "union", "bank", "rate", "inflation", "company",
    "profit", "loss", "launch", "phone", "chip", "software", "security", "breach", "data",
    "privacy", "law", "team", "season", "coach", "final", "match", "record", "player",
    "injury", "film", "festival", "award", "museum", "art", "river", "bridge", "hospital",
    "vaccine", "trial", "research", "scientists", "space", "mission", "telescope", "farmers",
    "harvest", "drought", "wildfire", "flood", "police", "investigation", "trade", "talks",
    "summit",
]


def _sentences() -> list[list[str]]:
    """Sentences of real news text (word lists), or made-up ones when the corpus is absent."""
    sentences: list[list[str]] = []
    if CORPUS_TEXT.is_dir():
        for path in sorted(CORPUS_TEXT.glob("*.txt")):
            text = path.read_text(errors="replace")
            for sentence in re.split(r"(?<=[.!?])\s+|\n+", text):
                words = sentence.split()
                if 8 <= len(words) <= 60:
                    sentences.append(words)
    if AG_NEWS.is_file():
        with AG_NEWS.open(newline="", encoding="utf-8") as file:
            for row in csv.reader(file):
                for text in row[1:]:
                    for sentence in re.split(r"(?<=[.!?])\s+", text.replace("\\", " ")):
                        if len(sentence.split()) >= 6:
                            sentences.append(sentence.split())
    if len(sentences) < 500:
        rng = random.Random(7)
        sentences += [[rng.choice(_FALLBACK_WORDS) for _ in range(rng.randint(8, 25))]
                      for _ in range(5000)]
    return sentences


def _names(rng: random.Random, count: int) -> list[str]:
    """Made-up proper names (people, places, firms): the rare words real titles are full of."""
    syllables = ("ka", "lo", "mi", "ra", "ven", "dor", "sel", "tu", "bri", "an", "gro", "fi",
                 "mar", "os", "lin", "zu", "hel", "ter", "qui", "po", "nes", "cas", "vi", "ber")
    return sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))).capitalize()
                   for _ in range(count)})


def make_items(folder: Path, count: int, seed: int = 1) -> int:
    """Write count items as RSS files in folder; returns how many are planted duplicates
    (each re-reported by another feed than the original's)."""
    rng = random.Random(seed)
    sentences = _sentences()
    names = _names(rng, 60_000)
    feeds_count = max(2, count // ITEMS_PER_FEED)
    now = datetime.now(UTC)
    items: list[tuple[int, str, str, str]] = []     # (feed, title, link, body)
    carried: dict[int, set[int]] = {}               # item → the feeds that carry its story
    planted = 0

    def name() -> str:
        # A few names are in the news all the time, most only now and then (Zipf-like).
        return names[min(len(names) - 1, int(rng.paretovariate(0.6)) - 1)
                     if rng.random() < 0.3 else rng.randrange(len(names))]

    for i in range(count):
        roll = rng.random()
        story = rng.randrange(len(items)) if items else 0
        free = [f for f in range(feeds_count) if f not in carried.get(story, ())]
        if items and roll < 0.06 and free:
            # A feed carries a story once: it is another feed that re-reports it.
            _original, title, link, body = items[story]
            feed = rng.choice(free)
            carried[story].add(feed)
            words = title.split()
            if roll < 0.04 and len(words) >= 8:
                # The same story from another feed, its title lightly edited.
                words.insert(rng.randrange(len(words)), rng.choice(
                    ("Report:", "Update:", "Exclusive:", "Analysis:")))
                title = " ".join(words)
                body = " ".join(" ".join(rng.choice(sentences)) for _ in range(4))
                link = f"https://site{feed}.example.net/n/{i}"
            else:
                # An exact re-post with a tracking-tagged link.
                link = f"{link}?utm_source=feed{feed}"
            items.append((feed, title, link, body))
            carried[len(items) - 1] = carried[story]
            planted += 1
            continue
        feed = i % feeds_count
        first, second = rng.choice(sentences), rng.choice(sentences)
        a, b = rng.randint(0, max(0, len(first) - 6)), rng.randint(0, max(0, len(second) - 5))
        words = first[a:a + rng.randint(3, 6)] + [name() for _ in range(rng.randint(1, 2))] \
            + second[b:b + rng.randint(2, 5)]
        title = " ".join(words).strip(" ,;:").capitalize()
        if rng.random() < 0.2:
            title += f" ({rng.randint(2, 2030)})"
        body = "\n".join(" ".join(rng.choice(sentences)) for _ in range(rng.randint(3, 7)))
        carried[len(items)] = {feed}
        items.append((feed, title, f"https://site{feed}.example.net/n/{i}", body))
    feeds: dict[int, list[str]] = {}
    for i, (feed, title, link, body) in enumerate(items):
        date = format_datetime(now - timedelta(minutes=count - i))
        paragraphs = "".join(f"<p>{escape(p)}</p>" for p in body.split("\n"))
        feeds.setdefault(feed, []).append(
            f"<item><title>{escape(title)}</title><link>{escape(link)}</link>"
            f"<guid isPermaLink=\"false\">bench-{seed}-{i}</guid><pubDate>{date}</pubDate>"
            f"<description>{escape(paragraphs)}</description></item>")
    for feed, entries in feeds.items():
        (folder / f"feed{feed:03d}.rss").write_text(
            f'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
            f"<title>Bench feed {feed}</title><link>https://site{feed}.example.net/</link>"
            f"<description>Bench</description>{''.join(entries)}</channel></rss>\n")
    return planted


def new_store(code: Path) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bench-import-"))
    run_digest(code, folder, SECRET, "init")
    return folder


def run_import(code: Path, folder: Path, items: Path) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, summary line) of `digest articles import items`."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "digest", "articles", "import", str(items)],
                            cwd=folder, env=digest_env(code, SECRET), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    summary = next((line for line in output.splitlines() if line.startswith("Imported")),
                   output.strip()[-200:])
    if proc.returncode:
        raise SystemExit(f"import failed ({proc.returncode}): {summary}")
    return seconds, usage.ru_maxrss / 1024, summary


def unsubscribe_during_import(code: Path, folder: Path, items: Path,
                              subscribers: int = 400) -> tuple[tuple[float, float, str],
                                                                list[float]]:
    """Import items while `digest serve` answers one-click unsubscribes (one POST every
    0.2 s, each for another subscriber); returns the import's figures and the latencies."""
    subs = folder / "subs.csv"
    subs.write_text("email,name\n" + "".join(f"reader{i}@example.org,Reader {i}\n"
                                            for i in range(subscribers)))
    run_digest(code, folder, SECRET, "subscribers", "import", str(subs))
    figures: list[tuple[float, float, str]] = []
    importer = threading.Thread(target=lambda: figures.append(run_import(code, folder, items)))
    done = unsubscribe_while(code, folder, SECRET, importer, subscribers, pause=0.2,
                             timeout=60)
    for failure in done.failures:
        print(f"  unsubscribe {failure}")
    return figures[0], done.latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="5000,20000,50000")
    parser.add_argument("--old", type=Path, help="a checkout of the version to compare with")
    parser.add_argument("--baseline-size", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-items-"))

    if args.old:
        items = work / f"n{args.baseline_size}"
        items.mkdir()
        make_items(items, args.baseline_size)
        times: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(args.rounds):
            for name, code in (("old", args.old), ("new", ROOT)):
                seconds, rss, summary = run_import(code, new_store(code), items)
                times[name].append(seconds)
                print(f"  {name} {args.baseline_size}: {seconds:.2f} s, {rss:.0f} MB; {summary}")
        for name, values in times.items():
            print(f"{name:>4} {args.baseline_size} items: median {statistics.median(values):.2f} s "
                  f"over {len(values)} rounds")

    sizes = [int(s) for s in args.sizes.split(",") if s]
    print(f"{'items':>7} {'seconds':>8} {'items/s':>8} {'peak RSS':>9}  result")
    for size in sizes:
        items = work / f"n{size}"
        items.mkdir(exist_ok=True)
        planted = make_items(items, size)
        folder = new_store(ROOT)
        if size == max(sizes):
            (seconds, rss, summary), latencies = unsubscribe_during_import(ROOT, folder, items)
        else:
            (seconds, rss, summary), latencies = run_import(ROOT, folder, items), []
        print(f"{size:>7} {seconds:>8.1f} {size / seconds:>8.0f} {rss:>7.0f} MB  {summary} "
              f"({planted} planted duplicates)")
        if latencies:
            print(f"        one-click unsubscribe during the import: {len(latencies)} POSTs, "
                  f"median {statistics.median(latencies) * 1000:.0f} ms, "
                  f"max {max(latencies) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
