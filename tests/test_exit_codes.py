"""One exit-code rule for every command that handles many records: 0 all done, 1 nothing
done, 3 partly done (some rows, files, addresses, messages or recipients failed, the
others went through), 130 interrupted. Each command is driven the way a user would, with
one good and one bad record, then only the bad one."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

from conftest import SAMPLE_JSON, Digest, run_digest, smtp_env, write_subscribers

from digest.mail.loopback import LoopbackSMTPServer

GOOD = [{"title": "A telescope finds a second moon", "url": "https://example.org/moon",
         "body": "Astronomers say so.", "published_at": "2026-11-26T10:00:00Z"}]


def codes(digest: Digest, *runs: tuple[str, ...]) -> list[int]:
    return [digest(*args).exit_code for args in runs]


def test_articles_import(digest: Digest, tmp_path: Path) -> None:
    (tmp_path / "good.json").write_text(json.dumps(GOOD))
    (tmp_path / "bad.json").write_text("{ this is not json")
    assert codes(digest, ("articles", "import", "bad.json"),
                 ("articles", "import", "good.json", "bad.json"),
                 ("articles", "import", "good.json")) == [1, 3, 0]


def test_subscribers_import(digest: Digest, tmp_path: Path) -> None:
    (tmp_path / "mixed.csv").write_text("email\nada@example.org\nnot-an-address\n")
    (tmp_path / "bad.csv").write_text("email\nnot-an-address\n")
    assert codes(digest, ("subscribers", "import", "bad.csv"),
                 ("subscribers", "import", "mixed.csv", "--dry-run"),
                 ("subscribers", "import", "mixed.csv")) == [1, 3, 3]
    assert digest("subscribers", "import", "mixed.csv").output.endswith(
        "unchanged 1, rejected 1.\n")


def test_suppressions_import_and_add(digest: Digest, tmp_path: Path) -> None:
    (tmp_path / "mixed.csv").write_text("email\nada@example.org\nnot-an-address\n")
    (tmp_path / "bad.csv").write_text("email\nnot-an-address\n")
    assert codes(digest, ("suppressions", "import", "bad.csv"),
                 ("suppressions", "import", "mixed.csv")) == [1, 3]
    # add: a bad address among good ones no longer stops the rest half-way with 1.
    result = digest("suppressions", "add", "bob@example.org", "not-an-address",
                    "cy@example.org")
    assert result.exit_code == 3, result.output
    assert "Suppressed bob@example.org" in result.output
    assert "Suppressed cy@example.org" in result.output
    assert "Error: 'not-an-address' is not a valid email address" in result.output
    assert codes(digest, ("suppressions", "add", "nope"),
                 ("suppressions", "add", "dee@example.org")) == [1, 0]


def test_bounces_import(digest: Digest, tmp_path: Path) -> None:
    (tmp_path / "reply.eml").write_text("From: someone@example.net\nTo: digest@example.org\n"
                                        "Subject: Re: The Weekly Digest\n\nThanks!\n")
    result = digest("bounces", "import", "reply.eml", "missing.eml")
    assert result.exit_code == 3, result.output
    assert "Error: missing.eml: no such file or folder" in result.output
    assert codes(digest, ("bounces", "import", "missing.eml"),
                 ("bounces", "import", "reply.eml")) == [1, 0]


def test_send(digest: Digest, smtp: LoopbackSMTPServer, tmp_path: Path) -> None:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("subscribers", "import", str(write_subscribers(tmp_path, 3)))
    bad = "reader00001@example.org"
    smtp.reply_policy = lambda phase, _f, rcpt: "550 5.1.1 No such user" \
        if phase == "RCPT" and rcpt == bad else None
    result = digest("send", "--yes", env=smtp_env(smtp))
    assert result.exit_code == 3, result.output
    assert f"{bad}: " in result.output
    # Every recipient refused: nothing done.
    (tmp_path / "more.json").write_text(json.dumps(GOOD))
    digest.ok("articles", "import", "more.json")
    smtp.reply_policy = lambda phase, _f, _r: "550 5.1.1 No such user" \
        if phase == "RCPT" else None
    result = digest("send", "--yes", env=smtp_env(smtp))
    assert result.exit_code == 1, result.output


def test_a_second_ctrl_c_is_130_with_one_line(digest: Digest, smtp: LoopbackSMTPServer,
                                             tmp_path: Path) -> None:
    """The second Ctrl-C, which stops sending at once, printed click's "Aborted!" with
    exit code 1, as if the command had failed."""
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("subscribers", "import", str(write_subscribers(tmp_path, 3)))
    at_server, release = threading.Event(), threading.Event()

    def hold(phase: str, _from: str, _rcpt: str) -> None:
        # The first message stays in flight until the test lets the server answer.
        if phase == "RCPT":
            at_server.set()
            release.wait(60)

    smtp.reply_policy = hold
    proc = run_digest(tmp_path, "send", "--yes",
                      env=smtp_env(smtp, DIGEST_SMTP__CONNECTIONS="1"))
    try:
        assert at_server.wait(60)
        assert proc.stderr is not None
        proc.send_signal(signal.SIGINT)
        assert proc.stderr.readline().startswith("SIGINT: finishing the messages in flight")
        proc.send_signal(signal.SIGINT)        # stops at once: the server still holds
        out, err = proc.communicate(timeout=60)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "Interrupted.", err
    assert "Aborted" not in out + err
    assert "Traceback" not in err and "Error closing" not in err, err
