"""The SMTP transaction: MAIL FROM, RCPT TO and DATA in one write where the server offers
PIPELINING (RFC 2920), the message in one write, dot-stuffed and CRLF-correct; and the
same outcomes, recipient by recipient, as the one-command-at-a-time way."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
from conftest import SAMPLE_JSON, Digest, smtp_env, sql, write_subscribers

from digest.config import SmtpSettings
from digest.mail.loopback import LoopbackSMTPServer
from digest.mail.transport import SmtpConnection, wire_data


def test_wire_data_stuffs_dots_and_mends_line_ends() -> None:
    assert wire_data(b"a\r\nb\r\n") == b"a\r\nb\r\n.\r\n"
    assert wire_data(b".top\r\nx\r\n.\r\n..two\r\n") == b"..top\r\nx\r\n..\r\n...two\r\n.\r\n"
    assert wire_data(b"bare\nlf\rcr\r\nend") == b"bare\r\nlf\r\ncr\r\nend\r\n.\r\n"
    assert wire_data(b"x\n.y") == b"x\r\n..y\r\n.\r\n"


class _StrictPipeliningServer:
    """Answers MAIL, RCPT and DATA only once all three have arrived: a client that waits
    for each reply before the next command never gets one."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with self.sock:
            conn, _ = self.sock.accept()
        conn.settimeout(5)
        buffer = b""

        def until(marker: bytes) -> bytes:
            nonlocal buffer
            while marker not in buffer:
                chunk = conn.recv(65536)
                if not chunk:
                    raise ConnectionError
                buffer += chunk
            head, _, buffer = buffer.partition(marker)
            return head + marker

        with conn:
            conn.sendall(b"220 strict ESMTP\r\n")
            until(b"\r\n")                                   # EHLO
            conn.sendall(b"250-strict\r\n250-PIPELINING\r\n250 SIZE 100000000\r\n")
            until(b"DATA\r\n")
            conn.sendall(b"250 sender ok\r\n250 recipient ok\r\n354 go on\r\n")
            self.received = until(b"\r\n.\r\n")
            conn.sendall(b"250 queued\r\n")
            until(b"\r\n")                                   # QUIT
            conn.sendall(b"221 bye\r\n")


def test_mail_rcpt_and_data_go_in_one_write() -> None:
    server = _StrictPipeliningServer()
    connection = SmtpConnection(SmtpSettings(port=server.port, timeout=3))
    assert connection.pipelining
    connection.send("news@example.org", "ada@example.org", b"Subject: hi\r\n\r\n.dot\r\n")
    connection.close()
    server.thread.join(5)
    assert server.received == b"Subject: hi\r\n\r\n..dot\r\n.\r\n"


def _outcome(digest: Digest, smtp: LoopbackSMTPServer) -> tuple[object, ...]:
    rows = sql(digest.folder, "select s.email, d.status, d.last_error from deliveries d "
                              "join subscribers s on s.id = d.subscriber_id order by s.email")
    bounced = json.loads(digest.ok("subscribers", "list", "--status", "bounced",
                                   "--format", "json").stdout)
    received = sorted(r for item in smtp.received for r in item.recipients)
    return rows, sorted(s["email"] for s in bounced), received


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_550_and_a_451_at_data_come_out_the_same_pipelined_or_not(
        digest: Digest, tmp_path: Path, pipelining: bool) -> None:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("subscribers", "import", str(write_subscribers(tmp_path, 8)))

    def policy(phase: str, _from: str, rcpt: str) -> str | None:
        if phase == "RCPT" and rcpt == "reader00002@example.org":
            return "550 5.1.1 No such user"
        if phase == "DATA" and rcpt == "reader00005@example.org":
            return "451 4.3.0 Try again later"
        return None

    with LoopbackSMTPServer(reply_policy=policy, pipelining=pipelining) as smtp:
        digest.partly("send", "--yes", env=smtp_env(smtp))
        rows, bounced, received = _outcome(digest, smtp)
    statuses = {email: (status, error) for email, status, error in rows}
    assert statuses["reader00002@example.org"] == ("failed", "550 5.1.1 No such user")
    assert statuses["reader00005@example.org"] == ("deferred", "451 4.3.0 Try again later")
    assert [s for s, _ in statuses.values()].count("sent") == 6
    assert bounced == ["reader00002@example.org"]
    assert received == sorted(e for e, (s, _) in statuses.items() if s == "sent")


def test_the_templates_data_form_is_wire_data_of_its_message() -> None:
    """build_wire (the bulk prepared once per variant) gives exactly what wire_data makes
    of build's message, for a variant whose text and HTML have lines that start with a
    dot, before and after each subscriber's values."""
    from conftest import NOW

    from digest.clock import FixedClock
    from digest.config import load_settings
    from digest.mail.message import MessageTemplate, Recipient
    from digest.mail.render import RenderedVariant, new_placeholders

    settings = load_settings(None, environ={"DIGEST_SECRET_KEY": "k" * 40})
    marks = new_placeholders()
    text = (".starts with a dot\n" + marks["greeting"] + "\n..two dots\n" + "word " * 60
            + "\n.after\n" + marks["unsubscribe_url"] + "\n.\n" + marks["email"] + "\n")
    html = f"<p>.{marks['greeting']}</p>\n.<p>{marks['preferences_url']}</p>\n"
    rendered = RenderedVariant("Dots", html, text, 1, 1, 1, marks)
    template = MessageTemplate(settings, rendered, "", 1, clock=FixedClock(NOW))
    # Names whose greeting quoted-printable folds right before a dot.
    names = ["Ada", ".Dot Name", *("x" * k + ".y" for k in range(60, 80))]
    dotted = 0
    for name in names:
        r = Recipient(7, "ada@example.org", name, 1, "<m@example.org>")
        plain = template.build(r)
        dotted += b"=\r\n.y" in plain
        assert template.build_wire(r) == wire_data(plain)
    assert dotted
