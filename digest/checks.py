"""`digest check` (the setup, step by step) and `digest preview --check` (the rendered
email against what inboxes need)."""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from html.parser import HTMLParser
from urllib.parse import urlsplit

from .audience.subscribers import normalise_email
from .config import DigestSettings, Settings
from .content.quality import article_flags
from .content.stories import Story
from .delivery.timing import next_runs
from .errors import ConfigError, DigestError, InputError
from .mail.message import DkimSigner, sender_address
from .mail.render import GMAIL_CLIP_BYTES
from .mail.transport import SessionStep, open_smtp, smtp_reply
from .scheduler import edition_trigger
from .store.db import STORE_ERRORS, Store
from .store.feeds import feed_count
from .store.subscribers import active_count, active_topic_choices

__all__ = ["Step", "check_content", "check_example_values", "check_rendered",
           "check_schedule", "check_sender", "check_setup", "check_subscriber_topics"]


@dataclass(frozen=True)
class Step:
    name: str
    ok: bool
    detail: str
    warning: bool = False     # ok, but worth a look


def check_smtp(settings: Settings) -> list[Step]:
    """Connect, EHLO, STARTTLS and AUTH when configured, QUIT: one step each, through the
    very session set-up that sending uses (mail.transport.open_smtp)."""
    steps: list[Step] = []

    def keep(step: SessionStep) -> None:
        steps.append(Step(step.name, step.ok, step.detail, step.warning))

    try:
        smtp = open_smtp(settings.smtp, keep)
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        if not steps or steps[-1].ok:       # a failure that no step has named yet
            steps.append(Step("session", False, f"{type(exc).__name__}: {exc}"))
        return steps
    try:
        code, reply = smtp.quit()
        steps.append(Step("QUIT", True, smtp_reply(code, reply)))
    except (OSError, smtplib.SMTPException) as exc:
        steps.append(Step("session", False, f"{type(exc).__name__}: {exc}"))
        smtp.close()
    return steps


def _config_file(settings: Settings) -> str:
    return str(settings.config_path) if settings.config_path else "the config"


def check_schedule(settings: Settings, now: datetime) -> list[Step]:
    """A failed step when `digest schedule run` would refuse [schedule] cron, or when the
    cron never comes; nothing when it is fine. The trigger is built by the scheduler's own
    function, so this check and the scheduler cannot disagree."""
    cron = settings.schedule.cron
    try:
        trigger = edition_trigger(settings)
    except DigestError as exc:
        return [Step("schedule", False, f"{exc}; the scheduler refuses it: fix [schedule] "
                                        f"cron in {_config_file(settings)}")]
    if not next_runs(trigger, now, 1):
        return [Step("schedule", False, f"[schedule] cron {cron!r} never comes (no such date "
                                        f"from now on), so no edition would go out: fix "
                                        f"[schedule] cron in {_config_file(settings)}")]
    return []


def check_sender(settings: Settings) -> list[Step]:
    """A failed step when [digest] from is not a valid address (the same validation as a
    subscriber's address); nothing when it is."""
    try:
        _name, address = sender_address(settings)    # says itself how to fix a bare name
    except ConfigError as exc:
        return [Step("sender", False, str(exc))]
    try:
        normalise_email(address)
    except InputError as exc:
        return [Step("sender", False, f"[digest] from {settings.digest.from_!r}: "
                                      f"{str(exc).rstrip('.')}; set [digest] from in "
                                      f"{_config_file(settings)} to \"Name "
                                      f"<name@your-domain.example>\"")]
    return []


# The domains reserved for examples (RFC 2606): mail to them goes nowhere, links to them
# lead nowhere.
_EXAMPLE_DOMAINS = ("example.org", "example.com", "example.net", "example")


def _example_domain(domain: str) -> bool:
    domain = domain.lower().rstrip(".")
    return any(domain == d or domain.endswith("." + d) for d in _EXAMPLE_DOMAINS)


def check_example_values(settings: Settings) -> list[Step]:
    """A warning step for each setting that still holds the example config's value or an
    example domain (from, reply_to, base_url, postal_address): the setup works, but its
    mail would say it comes from nobody and lead readers nowhere. Nothing when none do."""
    d = settings.digest
    where = _config_file(settings)
    steps: list[Step] = []
    for key, value in (("from", d.from_), ("reply_to", d.reply_to)):
        address = parseaddr(value)[1]
        if address and _example_domain(address.rpartition("@")[2]):
            steps.append(Step(key, True, f"[digest] {key} {value!r} is an example address "
                                         f"(mail to it goes nowhere): set your own in "
                                         f"{where}", warning=True))
    host = urlsplit(d.base_url).hostname or ""
    if _example_domain(host):
        steps.append(Step("base_url", True, f"[digest] base_url {d.base_url!r} is the "
                                            f"example's: unsubscribe and archive links lead "
                                            f"nowhere; set the public address of `digest "
                                            f"serve` in {where}", warning=True))
    if d.postal_address.strip() == DigestSettings.postal_address:
        steps.append(Step("postal_address", True, f"[digest] postal_address is the example's "
                                                  f"({d.postal_address!r}); every footer "
                                                  f"shows it: set your own in {where}",
                          warning=True))
    return steps


def check_subscriber_topics(settings: Settings, store: Store) -> list[Step]:
    """A failed step when active subscribers chose topics none of which the config has any
    more (they would get no edition at all); nothing otherwise. An empty choice means every
    topic and is always fine."""
    current = set(settings.topic_names)
    with store.sessions() as session:
        choices = active_topic_choices(session)
    # Articles carry the config's names exactly, so a topic only matches as spelled.
    stranded = [(email, topics) for email, topics in choices
                if topics and not current & set(topics)]
    if not stranded:
        return []
    email, topics = stranded[0]
    count = f"{len(stranded)} active subscriber{'s' * (len(stranded) != 1)}"
    return [Step("subscriber topics", False,
                 f"{count} chose only topics the config no longer has, so they get nothing "
                 f"(e.g. {email}: {', '.join(topics)}); give them current ones with `digest "
                 f"subscribers set-topics ADDRESS TOPIC…` (topics: "
                 f"{', '.join(settings.topic_names)})")]


def check_mailgun(settings: Settings) -> Step:
    """A warning while the Mailgun webhook is on: its signature does not cover the event."""
    return Step("Mailgun webhook", True,
                f"on: Mailgun signs only a timestamp and a token, not the event, so whoever "
                f"sees one signed request (a proxy's or a log's copy) can put any event "
                f"under it; digest takes each token once, and none older than [webhooks] "
                f"max_age_seconds ({settings.webhooks.max_age_seconds} s), so such a copy "
                f"works only if it arrives before Mailgun's own request. Keep request "
                f"bodies out of logs, or use the bounce mailbox instead", warning=True)


def check_setup(settings: Settings, store: Store) -> list[Step]:
    """One step per part of the setup, in order: config, store, the schedule, the sender
    address, settings still at the example's values (warnings), and subscribers' topics
    (only when something is wrong with them), secret key, DKIM, the Mailgun webhook (a
    warning, when it is on), and the transport (the SMTP session step by step)."""
    steps = [Step("config", True, f"{settings.config_path or 'built-in defaults'}: "
                                  f"{len(settings.topics)} topics, {len(settings.feeds)} "
                                  f"feeds in the file")]
    store_ok = True
    try:
        with store.sessions() as session:
            active = active_count(session)
            feeds = feed_count(session)
        steps.append(Step("store", True, f"{settings.store_url}: {active} active subscribers, "
                                         f"{feeds} feeds"))
    except STORE_ERRORS as exc:
        store_ok = False
        steps.append(Step("store", False, f"{settings.store_url}: {exc}"))
    steps += check_schedule(settings, store.clock.now())
    steps += check_sender(settings)
    steps += check_example_values(settings)
    if store_ok:
        steps += check_subscriber_topics(settings, store)
    if settings.secret_key:
        steps.append(Step("secret key", True, "DIGEST_SECRET_KEY is set"))
    else:
        # DIGEST_SECRET_KEY unset: the key is the file digest init wrote, and reading it
        # is the check (ConfigError, saying how to fix it, when it is missing or short).
        try:
            readable = bool(settings.signing_key)
        except DigestError as exc:
            steps.append(Step("secret key", False, str(exc)))
        else:
            steps.append(Step("secret key", readable, f"{settings.secret_file}"))
    if settings.dkim.enabled:
        try:
            signer = DkimSigner(settings)
            keys = ", ".join(f"{key.algorithm.decode()} as {key.selector.decode()}._domainkey."
                             f"{settings.dkim.domain}" for key in signer.keys)
            steps.append(Step("DKIM", True, f"signing with {keys}"))
        except DigestError as exc:
            steps.append(Step("DKIM", False, str(exc)))
    else:
        steps.append(Step("DKIM", True, "not configured: messages go out unsigned ([dkim])",
                          warning=True))
    if settings.webhooks.mailgun_signing_key:
        steps.append(check_mailgun(settings))
    if settings.delivery.transport == "maildir":
        maildir = settings.resolve_path(settings.delivery.maildir)
        steps.append(Step("transport", True, f"Maildir {maildir}"))
    else:
        steps += check_smtp(settings)
    return steps


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.images_without_alt: list[str] = []
        self.titles: list[str] = []
        self._in_title = 0
        self._title = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href") is not None:
            self.links.append(a["href"] or "")
        if tag == "img" and not (a.get("alt") or "").strip() and a.get("alt") != "":
            self.images_without_alt.append(a.get("src") or "?")
        if tag == "h3":
            self._in_title += 1
            self._title = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "h3" and self._in_title:
            self._in_title -= 1
            self.titles.append(" ".join(self._title.split()))

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title += data


def check_rendered(html: str, text: str) -> list[Step]:
    """Size against Gmail's clipping, images without alt, links that are not absolute
    http(s), and whether the text part carries every article of the HTML part."""
    page = _Collect()
    page.feed(html)
    size = len(html.encode())
    steps = [Step("size", size <= GMAIL_CLIP_BYTES,
                  f"HTML part {size / 1024:.1f} KB of Gmail's {GMAIL_CLIP_BYTES // 1024} KB "
                  f"clipping limit ({100 * size / GMAIL_CLIP_BYTES:.0f} %)")]
    steps.append(Step("images", not page.images_without_alt,
                      "every image has alt text" if not page.images_without_alt else
                      f"{len(page.images_without_alt)} without alt text: "
                      + ", ".join(page.images_without_alt[:5])))
    bad = [h for h in page.links if not re.match(r"https?://[^/\s]+", h)
           and not h.startswith(("#", "mailto:"))]
    steps.append(Step("links", not bad, f"{len(page.links)} links, all absolute http(s) "
                      f"(or in-page anchors)" if not bad else
                      f"{len(bad)} not absolute http(s): " + ", ".join(bad[:5])))
    flat = " ".join(text.split())
    missing = [t for t in page.titles if t not in flat]
    urls = [h for h in page.links if h.startswith("http")]
    missing_urls = sorted({u for u in urls if u not in text})
    steps.append(Step("text part", not missing and not missing_urls,
                      f"carries all {len(page.titles)} articles and {len(set(urls))} links"
                      if not missing and not missing_urls else
                      f"missing {len(missing)} titles and {len(missing_urls)} links: "
                      + ", ".join((missing + missing_urls)[:5])))
    return steps


def check_content(ranking: Sequence[tuple[str, Sequence[Story]]],
                  teaser_words: int) -> list[Step]:
    """What the edition holds: a failed step for each topic whose lead story is led by an
    article an editor should look at (undated, mojibake, a title in another script, a
    teaser that only repeats the title), a warning for each other such article, or one
    step saying all is well."""
    steps = []
    count = 0
    for topic, stories in ranking:
        for position, story in enumerate(stories):
            for article in story.articles:
                count += 1
                flags = article_flags(article, teaser_words)
                if not flags:
                    continue
                leads = position == 0 and article is story.lead
                where = f"{topic} lead" if leads else topic
                steps.append(Step("article", not leads,
                                  f"{article.id} ({where}) {article.title[:60]!r}: "
                                  f"{'; '.join(flags)}"
                                  + ("; fix it or move it before sending" if leads else ""),
                                  warning=not leads))
    if not steps:
        steps.append(Step("articles", True, f"all {count} dated, readable and with a "
                                            f"teaser of their own"))
    return steps
