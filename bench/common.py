"""What the benches share: `digest` of a given checkout run in its own process, a free
port on 127.0.0.1, and one-click unsubscribes sent to a real `digest serve` while other
work (an import) runs. No digest import at the top: the code measured may be another
checkout's (--old), put on sys.path only where it is needed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = ["Unsubscribes", "digest_env", "free_port", "run_digest", "unsubscribe_while"]


def digest_env(code: Path, secret: str) -> dict[str, str]:
    """The environment of a `digest` process of the checkout at code: none of ours
    DIGEST_ settings, its signing key secret."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["PYTHONPATH"] = str(code)
    env["DIGEST_SECRET_KEY"] = secret
    return env


def run_digest(code: Path, folder: Path, secret: str, *args: str) -> str:
    """`digest args…` of the checkout at code, run in folder; its output, or the bench
    ends with what it said."""
    result = subprocess.run([sys.executable, "-m", "digest", *args], cwd=folder,
                            env=digest_env(code, secret), capture_output=True, text=True,
                            check=False)
    if result.returncode:
        raise SystemExit(f"digest {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Unsubscribes:
    """How long each one-click unsubscribe took (seconds), and those that failed."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def unsubscribe_while(code: Path, folder: Path, secret: str, work: threading.Thread,
                      readers: int, pause: float, timeout: float) -> Unsubscribes:
    """Start `digest serve` of code on folder's store, wait until it answers, start work,
    and while it runs POST one-click unsubscribes for subscribers 1, 2, … readers (ids),
    one every pause seconds, each waiting up to timeout; then wait for work to end."""
    sys.path.insert(0, str(code))
    from digest.tokens import Signer

    signer = Signer(secret.encode(), "unsubscribe")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "digest", "serve", "--port", str(port)],
                              cwd=folder, env=digest_env(code, secret),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    done = Unsubscribes()
    try:
        with httpx.Client(timeout=timeout) as client:
            for _ in range(200):
                try:
                    client.get(f"{base}/unsubscribe")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            work.start()
            reader = 1
            while work.is_alive() and reader <= readers:
                start = time.perf_counter()
                response = client.post(f"{base}/u/{signer.make(reader, 1)}",
                                       data={"List-Unsubscribe": "One-Click"})
                done.latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    done.failures.append(f"reader {reader}: HTTP {response.status_code}")
                reader += 1
                time.sleep(pause)
            work.join()
    finally:
        server.terminate()
        server.wait()
    return done
