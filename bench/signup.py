"""How long a sign-up takes, by what the address was: new, pending, active, complained,
bounced. A real `digest serve` (its own process, trusted_proxies = 1 so each request
comes from a client of its own) and a real SMTP server; the cases alternate in rounds.
Prints each case's median and its ratio to the new address's.

    python bench/signup.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import digest_env, free_port, run_digest

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-that-is-long-enough-0123456789"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    rounds = parser.parse_args().rounds
    sys.path.insert(0, str(ROOT))
    from digest.mail.loopback import LoopbackSMTPServer

    smtp = LoopbackSMTPServer().start()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run_digest(ROOT, folder, SECRET, "init")
        run_digest(ROOT, folder, SECRET, "subscribers", "add", "active@example.org")
        run_digest(ROOT, folder, SECRET, "suppressions", "add", "--reason", "complained",
                   "complained@example.org")
        run_digest(ROOT, folder, SECRET, "suppressions", "add", "--reason", "bounced",
                   "bounced@example.org")
        port = free_port()
        env = digest_env(ROOT, SECRET) | {
            "DIGEST_SMTP__HOST": "127.0.0.1", "DIGEST_SMTP__PORT": str(smtp.port),
            "DIGEST_WEB__TRUSTED_PROXIES": "1",
            "DIGEST_DIGEST__BASE_URL": f"http://127.0.0.1:{port}"}
        server = subprocess.Popen([sys.executable, "-m", "digest", "serve", "--port",
                                   str(port)], cwd=folder, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            times = measure(f"http://127.0.0.1:{port}", rounds)
        finally:
            server.terminate()
            server.wait(30)
            smtp.stop()
    base = statistics.median(times["new"])
    for case, values in times.items():
        median = statistics.median(values)
        print(f"{case:>10}: median {median * 1000:6.2f} ms  ({median / base:.2f}× new)")


def measure(base: str, rounds: int) -> dict[str, list[float]]:
    cases = ["new", "pending", "active", "complained", "bounced"]
    times: dict[str, list[float]] = {case: [] for case in cases}
    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(600):
            try:
                client.get("/subscribe")
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        page = client.get("/subscribe").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        n = 0

        def post(email: str) -> float:
            nonlocal n
            n += 1
            headers = {"X-Forwarded-For": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}
            start = time.perf_counter()
            response = client.post("/subscribe", headers=headers,
                                   data={"csrf_token": token, "email": email})
            elapsed = time.perf_counter() - start
            assert response.status_code == 200, response.status_code
            return elapsed

        post("pending@example.org")
        for r in range(rounds):
            order = cases[r % len(cases):] + cases[:r % len(cases)]
            for case in order:
                email = f"new{r}@example.org" if case == "new" else f"{case}@example.org"
                times[case].append(post(email))
    return times


if __name__ == "__main__":
    main()
