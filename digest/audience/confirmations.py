"""The mail a sign-up queues: a confirmation link for a new or pending address, or a note
that the address is subscribed already (with a link to its topics) — so the sign-up form
answers the same whatever the address was."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from ..clock import Clock
from ..config import Settings
from ..mail.message import SMTP_POLICY, sender_address
from ..mail.render import Renderer
from ..store.models import Subscriber, SubscriberStatus
from ..text import greeting
from ..tokens import Signer

__all__ = ["CONFIRM_HOURS", "ConfirmationMail", "WelcomeMail", "compose_mail"]

# How long a confirmation link works.
CONFIRM_HOURS = 48


class ConfirmationMail:
    """Composes sign-up mails from the mail templates (a user's templates_dir over the
    built-in ones). Raises ConfigError when there is no signing key or templates_dir is
    not a folder."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        key = settings.signing_key
        self.templates = Renderer(settings).env
        self.base = settings.digest.base_url.rstrip("/")
        self.preferences = Signer(key, "preferences")
        self.confirm = Signer(key, "confirm")

    def __call__(self, sub: Subscriber) -> tuple[str, bytes]:
        """(envelope sender, message bytes) of the mail a sign-up of sub queues."""
        digest = self.settings.digest
        if sub.status is SubscriberStatus.ACTIVE:
            subject = f"You are already subscribed to {digest.name}"
            body = self.templates.get_template("subscribed.txt.j2").render(
                digest=digest, greeting=greeting(sub.name), email=sub.email,
                preferences_url=f"{self.base}/p/"
                                f"{self.preferences.make(sub.id, sub.token_version)}")
        else:
            expires = int(self.clock.timestamp()) + CONFIRM_HOURS * 3600
            subject = f"Confirm your subscription to {digest.name}"
            body = self.templates.get_template("confirm.txt.j2").render(
                digest=digest, greeting=greeting(sub.name), email=sub.email,
                confirm_url=f"{self.base}/confirm/"
                            f"{self.confirm.make(sub.id, sub.token_version, expires)}",
                hours=CONFIRM_HOURS)
        return compose_mail(self.settings, sub.email, subject, body, now=self.clock.now())


class WelcomeMail:
    """The mail a confirmed sign-up gets (welcome.txt.j2 and welcome.html.j2, overridable
    in templates_dir like the others): a link to the latest edition in the archive, and
    to their topics."""

    def __init__(self, settings: Settings, latest_edition: Callable[[], int | None],
                 clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.templates = Renderer(settings).env
        self.base = settings.digest.base_url.rstrip("/")
        self.preferences = Signer(settings.signing_key, "preferences")
        self.latest_edition = latest_edition

    def __call__(self, sub: Subscriber) -> tuple[str, bytes]:
        digest = self.settings.digest
        latest = self.latest_edition()
        values = {"digest": digest, "greeting": greeting(sub.name), "email": sub.email,
                  "archive_url": f"{self.base}/editions",
                  "latest_url": f"{self.base}/editions/{latest}" if latest else None,
                  "preferences_url": f"{self.base}/p/"
                                     f"{self.preferences.make(sub.id, sub.token_version)}"}
        text = self.templates.get_template("welcome.txt.j2").render(**values)
        html = self.templates.get_template("welcome.html.j2").render(**values)
        return compose_mail(self.settings, sub.email, f"Welcome to {digest.name}", text, html,
                            now=self.clock.now())




def compose_mail(settings: Settings, to: str, subject: str, text: str,
                 html: str | None = None, *, now: datetime) -> tuple[str, bytes]:
    """(envelope sender, message bytes) of a plain-text mail from the digest to `to`,
    dated now."""
    msg = EmailMessage(policy=SMTP_POLICY)
    name, addr = sender_address(settings)
    msg["From"] = f"{name} <{addr}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain=addr.rsplit("@", 1)[1])
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return addr, msg.as_bytes(policy=SMTP_POLICY)
