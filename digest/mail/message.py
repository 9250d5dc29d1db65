"""MIME messages for one edition variant.

``MessageTemplate`` serialises a rendered variant once — headers that every recipient
shares, the MIME skeleton and both bodies in quoted-printable, split at the
per-subscriber placeholders. A subscriber's message is then a join of those bytes with
a few short values encoded by binascii (C speed): no Jinja2, no premailer and no email
package per message. ``build_email_message`` builds the same message the slow,
obvious way with the email package; tests prove both parse to the same thing.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, parseaddr

from ..clock import Clock
from ..config import Settings
from ..content.edition import ALL_TOPICS, Editorial
from ..errors import ConfigError
from ..store.models import Article
from ..text import clean_label, greeting
from ..tokens import Signer, Verp
from .render import Personal, RenderedVariant, Renderer
from .signing import SIGNED_HEADERS, BodyHasher, DkimSigner, canonical_header, dkim_signer

__all__ = [
    "DkimSigner",
    "MessageTemplate",
    "Prepared",
    "Recipient",
    "SMTP_POLICY",
    "build_email_message",
    "list_id",
    "message_id",
    "sender_address",
    "variant_template",
]

# Long List-Unsubscribe URLs must not be folded into encoded-words (that breaks the link).
SMTP_POLICY = SMTP.clone(max_line_length=998)
# Header lines are folded to stay near 78 characters (RFC 5322's "should"); a word is
# never cut, so a single word longer than this goes out as encoded-words instead, which
# keeps every line within the 998-octet limit whatever the content.
_FOLD_AT = 78
_LONGEST_WORD = 900


@dataclass(frozen=True)
class Prepared:
    """A message without its DKIM signatures, and their making, begun."""

    message: bytes
    signing: list[tuple[bytes, bytes | int]] | None


@dataclass(frozen=True)
class Recipient:
    subscriber_id: int
    email: str
    name: str
    token_version: int
    message_id: str


def sender_address(settings: Settings) -> tuple[str, str]:
    """(display name, address) of [digest] from."""
    name, addr = parseaddr(settings.digest.from_)
    if "@" not in addr:
        raise ConfigError(f"[digest] from {settings.digest.from_!r} has no address; use "
                          f"\"Name <name@example.org>\"")
    return name or settings.digest.name, addr


def _domain(settings: Settings) -> str:
    return sender_address(settings)[1].rsplit("@", 1)[1].lower()


def list_id(settings: Settings) -> str:
    """The List-Id value: configured, or derived from the name and the sender's domain."""
    if settings.digest.list_id:
        return clean_label(settings.digest.list_id)
    slug = re.sub(r"[^a-z0-9]+", "-", settings.digest.name.lower()).strip("-") or "digest"
    return f"{settings.digest.name} <{slug}.{_domain(settings)}>"


def message_id(settings: Settings, edition_id: int, subscriber_id: int) -> str:
    """Stable per (edition, subscriber): a resend carries the same Message-ID. Its tag
    is keyed with the secret: a bounce report counts only when it quotes the Message-ID
    we gave that delivery (without VERP), so nobody else may work one out."""
    tag = hmac.new(settings.signing_key, f"message-id:{edition_id}:{subscriber_id}".encode(),
                   hashlib.sha256).hexdigest()[:16]
    return f"<digest.{edition_id}.{subscriber_id}.{tag}@{_domain(settings)}>"


def _words(text: str) -> list[str]:
    """text as header words: as they are when ASCII, else RFC 2047 encoded-words (each
    short enough to fold between)."""
    words = text.split()
    if text.isascii() and all(len(w) <= _LONGEST_WORD for w in words):
        return words
    return Header(text, "utf-8", maxlinelen=_FOLD_AT - 2).encode(linesep="\n").split()


def _fold(name: str, words: list[str]) -> bytes:
    """'name: words' and CRLF, folded between words (CRLF before the space) so that no
    line passes 78 characters unless one word does, and none passes 998."""
    lines: list[str] = []
    line = f"{name}:"
    for word in words:
        if len(line) + 1 + len(word) > _FOLD_AT and line.strip() != f"{name}:":
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _text_header(name: str, value: str) -> bytes:
    """An unstructured header (Subject), folded; encoded-words when not ASCII."""
    return _fold(name, _words(clean_label(value)))


def _mailbox_header(name: str, display: str, address: str) -> bytes:
    """A header of one mailbox, "display name" <address>, folded; the display name in
    encoded-words when it is not ASCII, the address always as it is."""
    display = clean_label(display)
    if not display:
        return _fold(name, [address])
    if display.isascii() and len(display) <= _LONGEST_WORD:
        return _fold(name, formataddr((display, address)).split(" "))   # quoted as needed
    return _fold(name, [*_words(display), f"<{address}>"])


def _qp(text: str) -> bytes:
    data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    # b2a_qp ends soft breaks with a bare LF when the input has no CRLF of its own.
    return binascii.b2a_qp(data, istext=True).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _list_id_header(value: str) -> bytes:
    """List-Id: the phrase as text (encoded-words when not ASCII), the <id> as it is."""
    phrase, bracket, key = value.rpartition("<")
    if not bracket:
        return _text_header("List-Id", value)
    return _fold("List-Id", [*_words(phrase), f"<{key.strip()}"])


def _split(body: str, placeholders: dict[str, str]) -> list[tuple[bytes, str | None]]:
    """QP-encoded static pieces, each followed by the placeholder field after it (or None)."""
    tokens = {token: field for field, token in placeholders.items()}
    pattern = re.compile("|".join(re.escape(t) for t in tokens))
    pieces: list[tuple[bytes, str | None]] = []
    start = 0
    for m in pattern.finditer(body):
        pieces.append((_qp(body[start:m.start()]), tokens[m.group()]))
        start = m.end()
    pieces.append((_qp(body[start:]), None))
    return pieces


class MessageTemplate:
    """One variant, serialised once; ``build`` makes one subscriber's message bytes."""

    def __init__(self, settings: Settings, rendered: RenderedVariant, variant_key: str,
                 edition_id: int, *, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock          # the Date header and DKIM's t=: when it is made
        self.rendered = rendered
        d = settings.digest
        self.base = d.base_url.rstrip("/")
        self.envelope_from = sender_address(settings)[1]
        self.edition_id = edition_id
        return_path = settings.bounces.return_path
        self._verp = Verp(settings.signing_key, return_path) if return_path else None
        self._unsubscribe = Signer(settings.signing_key, "unsubscribe")
        self._preferences = Signer(settings.signing_key, "preferences")
        self.mailto = d.unsubscribe_mailto
        boundary = "=_digest_" + hashlib.sha256(
            f"{edition_id}|{variant_key}|{rendered.subject}".encode()).hexdigest()[:28]
        self.boundary = boundary
        self._head = [(b"from", _mailbox_header("From", *sender_address(settings))),
                      (b"subject", _text_header("Subject", rendered.subject))]
        tail = []
        if d.reply_to:
            reply_name, reply_addr = parseaddr(clean_label(d.reply_to))
            tail.append((b"reply-to", _mailbox_header("Reply-To", reply_name, reply_addr)))
        tail += [
            (b"list-id", _list_id_header(list_id(settings))),
            (b"list-unsubscribe-post", b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
            (b"mime-version", b"MIME-Version: 1.0\r\n"),
            (b"content-type", f'Content-Type: multipart/alternative; boundary="{boundary}"'
                              f'\r\n'.encode()),
        ]
        self._tail = tail
        self._head_bytes = b"".join(f for _, f in self._head)
        self._tail_bytes = b"".join(f for _, f in tail) + b"\r\n"
        self._fixed, self._layout = _body_layout(boundary, rendered)
        self._fixed_wire = [_stuff(segment) for segment in self._fixed]
        self._date_second = -1
        self._date = b""
        self.signer = dkim_signer(settings)
        self._hasher: BodyHasher | None = None
        self._canonical: dict[bytes, bytes] = {}
        if self.signer is not None:
            self._prepare_signing(self.signer)

    # -- per subscriber --

    def personal(self, r: Recipient) -> Personal:
        unsubscribe = self._unsubscribe.make(r.subscriber_id, r.token_version)
        preferences = self._preferences.make(r.subscriber_id, r.token_version)
        return Personal(
            greeting=greeting(r.name),
            email=r.email,
            unsubscribe_url=f"{self.base}/u/{unsubscribe}",
            preferences_url=f"{self.base}/p/{preferences}",
        )

    def envelope_sender(self, subscriber_id: int) -> str:
        """The envelope sender (MAIL FROM) of one subscriber's message: their VERP address
        when [bounces] return_path is set, so that a bounce names them and the edition
        without any parsing; the From address otherwise."""
        if self._verp is None or not self.edition_id:
            return self.envelope_from
        return self._verp.address(subscriber_id, self.edition_id)

    def list_unsubscribe(self, personal: Personal) -> str:
        value = f"<{personal.unsubscribe_url}>"
        if self.mailto:
            value += f", <mailto:{self.mailto}?subject=unsubscribe>"
        return value

    def _date_header(self, now: int) -> bytes:
        if now != self._date_second:
            self._date = f"Date: {format_datetime(datetime.fromtimestamp(now, UTC))}\r\n".encode()
            self._date_second = now
        return self._date

    def build(self, r: Recipient) -> bytes:
        """The complete message for one recipient, CRLF line endings."""
        return self.finish(self.prepare(r, wire=False))

    def build_wire(self, r: Recipient) -> bytes:
        """The same message in its DATA form (transport.wire_data's): every line that
        starts with a dot doubled, ending with the lone dot. The fixed body segments were
        prepared once; only the personal ones are looked at here."""
        return self.finish(self.prepare(r, wire=True))

    def finish(self, prepared: Prepared) -> bytes:
        """A prepared message with its DKIM signatures on top (waiting for those being
        made in the signing process)."""
        if prepared.signing is None or self.signer is None:
            return prepared.message
        return self.signer.end(prepared.signing) + prepared.message

    def drop(self, prepared: Prepared) -> None:
        """Let go of a prepared message that will not be sent."""
        if prepared.signing is not None and self.signer is not None:
            self.signer.drop(prepared.signing)

    def prepare(self, r: Recipient, *, wire: bool) -> Prepared:
        """One recipient's message, its signatures begun (see DkimSigner.begin)."""
        p = self.personal(r)
        now = int(self.clock.timestamp())
        values = {"greeting": p.greeting, "email": p.email,
                  "unsubscribe_url": p.unsubscribe_url, "preferences_url": p.preferences_url}
        personal = {("text", name): _qp(value) + b"=\r\n" for name, value in values.items()}
        personal.update({("html", name): _qp(html.escape(value, quote=True)) + b"=\r\n"
                         for name, value in values.items()})
        fields = [
            (b"to", _mailbox_header("To", r.name, r.email)),
            (b"date", self._date_header(now)),
            (b"message-id", f"Message-ID: {r.message_id}\r\n".encode()),
            (b"list-unsubscribe", _fold("List-Unsubscribe", self.list_unsubscribe(p).split())),
        ]
        parts: list[int | bytes] = [part if isinstance(part, int) else personal[part]
                                    for part in self._layout]
        if wire:
            fixed = self._fixed_wire
            body = b"".join(fixed[part] if isinstance(part, int) else _stuff(part)
                            for part in parts) + b".\r\n"
        else:
            fixed = self._fixed
            body = b"".join(fixed[part] if isinstance(part, int) else part for part in parts)
        message = (self._head_bytes + b"".join(f for _, f in fields) + self._tail_bytes
                   + body)
        if self.signer is None or self._hasher is None:
            return Prepared(message, None)
        return Prepared(message, self._signature(self.signer, self._hasher, fields, parts,
                                                 now))

    # -- DKIM --

    def _prepare_signing(self, signer: DkimSigner) -> None:
        """The canonical forms of the fixed header fields and body segments, made once."""
        for name, field in (*self._head, *self._tail):
            self._canonical[name] = canonical_header(field, signer.relaxed_headers)
        self._hasher = BodyHasher(self._fixed[0], signer.relaxed_body)
        for key, segment in enumerate(self._fixed[1:], 1):
            self._hasher.fixed(key, segment)

    def _signature(self, signer: DkimSigner, hasher: BodyHasher,
                   fields: list[tuple[bytes, bytes]], parts: list[int | bytes], now: int
                   ) -> list[tuple[bytes, bytes | int]]:
        canonical = dict(self._canonical)
        for name, field in fields:
            canonical[name] = canonical_header(field, signer.relaxed_headers)
        names = [name.encode() for name in SIGNED_HEADERS if name.encode() in canonical]
        return signer.begin(names, [canonical[n] for n in names], hasher.digest(parts[1:]),
                            now)


def _stuff(segment: bytes) -> bytes:
    """Whole lines, each that starts with a dot given a second one (SMTP's dot-stuffing)."""
    segment = segment.replace(b"\n.", b"\n..")
    return b"." + segment if segment.startswith(b".") else segment


def _body_layout(boundary: str, rendered: RenderedVariant
                 ) -> tuple[list[bytes], list[int | tuple[str, str]]]:
    """The body as fixed segments and personal slots, in order: the layout names a fixed
    segment by its index and a personal one by (part, field). Every segment is whole lines
    (a personal value stands on lines of its own, between soft line breaks), so the
    segments can be canonicalised for DKIM one by one; the first is always fixed."""
    part = ('--{b}\r\nContent-Type: text/{sub}; charset="utf-8"\r\n'
            'Content-Transfer-Encoding: quoted-printable\r\n\r\n')
    fixed: list[bytes] = []
    layout: list[int | tuple[str, str]] = []
    current = [part.format(b=boundary, sub="plain").encode()]
    for kind, text in (("text", rendered.text), ("html", rendered.html)):
        if kind == "html":
            current.append(("\r\n" + part.format(b=boundary, sub="html")).encode())
        for piece, name in _split(text, rendered.placeholders):
            current.append(piece)
            if name:
                current.append(b"=\r\n")
                layout.append(len(fixed))
                fixed.append(b"".join(current))
                current = []
                layout.append((kind, name))
    current.append(f"\r\n--{boundary}--\r\n".encode())
    layout.append(len(fixed))
    fixed.append(b"".join(current))
    return fixed, layout


def variant_template(settings: Settings, articles: Sequence[Article], number: int,
                     date: datetime, variant: str = ALL_TOPICS, *, clock: Clock,
                     edition_id: int = 0, test: bool = False,
                     editorial: Editorial | None = None) -> MessageTemplate:
    """One variant rendered (Jinja2 and premailer, once) and serialised (once): the one way
    sending, test copies and dry runs make a variant's messages."""
    rendered = Renderer(settings).render_edition(articles, number, date, variant, test=test,
                                                 editorial=editorial)
    return MessageTemplate(settings, rendered, "test" if test else variant, edition_id,
                           clock=clock)


def build_email_message(template: MessageTemplate, r: Recipient,
                        date: datetime | None = None) -> EmailMessage:
    """The same message built the obvious way with the email package (a test copy, and the
    reference the fast path is checked against)."""
    settings = template.settings
    personal = template.personal(r)
    html_body, text_body = template.rendered.personalise(personal)
    msg = EmailMessage(policy=SMTP_POLICY)
    name, addr = sender_address(settings)
    msg["From"] = Address(display_name=clean_label(name), addr_spec=addr)
    msg["To"] = Address(display_name=clean_label(r.name), addr_spec=r.email)
    msg["Subject"] = clean_label(template.rendered.subject)
    msg["Date"] = format_datetime(date or template.clock.now())
    msg["Message-ID"] = r.message_id
    if settings.digest.reply_to:
        msg["Reply-To"] = clean_label(settings.digest.reply_to)
    msg["List-Id"] = list_id(settings)
    msg["List-Unsubscribe"] = template.list_unsubscribe(personal)
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text_body, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html_body, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg
