"""Peak memory of reading a bounce mailbox of big messages over IMAP: this checkout
against another revision (by default main), each in a child process of its own, from a
real Dovecot on 127.0.0.1, alternating in rounds. The handler leaves every message where it
is, so every run reads the same mailbox. Prints each contender's median peak RSS (the
child's ru_maxrss), its median time, and the ratios.

    python bench/mailbox.py [--messages 12] [--megabytes 8] [--rounds 3] [--old-rev main]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Run in the child, with the checkout measured first on sys.path: one fetch, then what
# it cost. The handler keeps nothing and leaves each message in the mailbox.
CHILD = """
import json, resource, sys, time
from pathlib import Path
from typing import Any
from digest.audience.mailbox import fetch_mailbox
from digest.config import load_settings, with_overrides
folder = Path(sys.argv[1])
(folder / "digest.toml").write_text("")
settings = with_overrides(load_settings(folder / "digest.toml", environ={}),
                          bounces=json.loads(sys.argv[2]))
seen = []
start = time.perf_counter()
report = fetch_mailbox(settings, lambda raw, source: seen.append(len(raw)) and False)
took = time.perf_counter() - start
print(json.dumps({"code": __import__("digest").__file__, "read": report.read,
                  "bytes": sum(seen), "seconds": took,
                  "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def old_checkout(rev: str, into: Path) -> Path:
    """The digest package of rev (and the files beside it that it reads), unpacked into a
    folder of its own."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "digest",
                              "config.example.toml", "templates"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run(code: Path, folder: Path, bounces: dict[str, object]) -> dict[str, Any]:
    # -S: no .pth files, so the editable install of this checkout does not take the place
    # of the one measured; the dependencies come from site-packages, named after it.
    path = f"{code}:{sysconfig.get_paths()['purelib']}"
    result = subprocess.run([sys.executable, "-S", "-c", CHILD, str(folder),
                             json.dumps(bounces)],
                            env={"PYTHONPATH": path, "PATH": "/usr/bin:/bin"},
                            cwd=folder,        # not this checkout: -c puts the cwd first
                            capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"the fetch of {code} failed:\n{result.stderr}")
    return dict(json.loads(result.stdout))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=12)
    parser.add_argument("--megabytes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--old-rev", default="",
                        help="the revision to compare with (default: where this branch "
                             "left main)")
    args = parser.parse_args()
    if not args.old_rev:
        args.old_rev = subprocess.run(["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
                                      capture_output=True, text=True,
                                      check=True).stdout.strip()[:10]
    sys.path.insert(0, str(ROOT / "tests"))
    from mailservers import Dovecot

    server = Dovecot().start()
    try:
        user = server.add_user()
        line = b"Q" * 76 + b"\r\n"
        for n in range(args.messages):
            head = (f"From: MAILER-DAEMON@mx.example.net\r\nTo: bounces@example.org\r\n"
                    f"Message-ID: <big{n}@mx.example.net>\r\nSubject: big {n}\r\n\r\n")
            user.deliver(head.encode() + line * (args.megabytes * 1024 * 1024 // len(line)))
        bounces = user.bounces("imap")
        with tempfile.TemporaryDirectory() as tmp:
            contenders = {"old (" + args.old_rev + ")": old_checkout(args.old_rev,
                                                                     Path(tmp) / "old"),
                          "new (this checkout)": ROOT}
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
            for _ in range(args.rounds):
                for name, code in contenders.items():
                    work = Path(tmp) / "work"
                    work.mkdir(exist_ok=True)
                    results[name].append(run(code, work, bounces))
    finally:
        server.stop()
    print(f"{args.messages} messages of {args.megabytes} MB over IMAP, {args.rounds} rounds")
    medians = {name: (statistics.median(r["peak_kb"] for r in runs) / 1024,
                      statistics.median(r["seconds"] for r in runs))
               for name, runs in results.items()}
    for name, runs in results.items():
        assert all(r["read"] == args.messages for r in runs), (name, runs)
        print(f"  {name}: {runs[0]['code']}")
    (old_mb, old_s), (new_mb, new_s) = medians.values()
    for name, (mb, seconds) in medians.items():
        print(f"  {name:24} peak RSS {mb:8.1f} MB   time {seconds:6.2f} s")
    print(f"  new/old: peak RSS x{new_mb / old_mb:.2f}, time x{new_s / old_s:.2f}")


if __name__ == "__main__":
    main()
