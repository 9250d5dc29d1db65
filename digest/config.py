"""Settings: built-in defaults, then a TOML file, then ``DIGEST_SECTION__KEY`` overrides.

The file is found by ``--config PATH``, then ``$DIGEST_CONFIG``, then
``./digest.toml``; with none of them the built-in defaults apply (the same values
``config.example.toml`` documents). Secrets (the SMTP password, the signing key)
come only from the environment — or, for the signing key, from the random file
``digest init`` writes beside the store.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError
from .resources import package_resource

__all__ = [
    "AdminSettings",
    "BouncesSettings",
    "DeliverySettings",
    "DkimSettings",
    "DigestSettings",
    "FeedSettings",
    "FetchSettings",
    "IngestSettings",
    "GroupingSettings",
    "ScheduleSettings",
    "Settings",
    "SmtpSettings",
    "StoreSettings",
    "TopicRule",
    "TrackingSettings",
    "WebSettings",
    "WebhooksSettings",
    "find_config_file",
    "load_settings",
    "parse_span",
    "with_overrides",
]

ENV_PREFIX = "DIGEST_"


@dataclass(frozen=True)
class TopicRule:
    name: str
    keywords: tuple[str, ...] = ()
    description: str = ""
    # Other names an article's own topic may give it by (a record's "topic": "Tech"):
    # they map to this topic.
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeedSettings:
    url: str
    name: str = ""
    topic: str = ""
    weight: float = 1.0


@dataclass(frozen=True)
class GroupingSettings:
    """How articles find their topic and story, and how a topic's stories are ranked."""

    method: str = "semantic"
    # The least confidence at which the semantic step assigns a topic; below, the
    # catch-all. The confidence is how much nearer (in cosine similarity) an article is
    # to its nearest topic than to the nearest subject no topic covers (see
    # content/topics.py, ELSEWHERE): -0.1 is the equal-error point of real news and
    # off-topic writing (podcast episodes, gardening, recipes) with the default topics
    # (bench/topics.py).
    min_margin: float = -0.1
    # Two articles tell the same story when their similarity reaches this, they appeared
    # within story_window_hours of each other and they share three names or figures
    # (content/stories.py).
    story_threshold: float = 0.7
    story_window_hours: float = 72.0
    # Recency decay of the ranking score: an article this many hours older than the
    # edition counts half.
    half_life_hours: float = 48.0


@dataclass(frozen=True)
class DigestSettings:
    name: str = "The Weekly Digest"
    from_: str = "Weekly Digest <digest@example.org>"
    reply_to: str = ""
    base_url: str = "https://digest.example.org"
    postal_address: str = "Example Media, 1 Example Street, 10115 Berlin, Germany"
    language: str = "en"
    teaser_words: int = 45
    max_articles: int = 30
    min_articles: int = 1
    templates_dir: str = ""
    catch_all_topic: str = "More stories"
    subject: str = "{name} — {date}: {top_story}"
    list_id: str = ""
    unsubscribe_mailto: str = ""
    utm_source: str = ""
    utm_medium: str = "email"
    utm_campaign: str = "digest-{number}"
    # Who reviews each edition: the review mail and the reminders go to these addresses
    # (a TOML list, or commas in DIGEST_DIGEST__EDITORS).
    editors: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoreSettings:
    url: str = "sqlite:///digest.db"


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 25
    security: str = "none"
    username: str = ""
    password: str = field(default="", repr=False)
    connections: int = 4
    timeout: float = 30.0
    max_per_second: float = 0.0
    helo: str = ""


@dataclass(frozen=True)
class DeliverySettings:
    transport: str = "smtp"
    maildir: str = "outbox"
    workers: bool = False
    lease_seconds: int = 300
    batch_size: int = 50
    retry_base_seconds: int = 60
    max_attempts: int = 8
    max_consecutive_errors: int = 25


@dataclass(frozen=True)
class FetchSettings:
    timeout: float = 20.0
    deadline_seconds: float = 60.0
    max_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 5
    concurrency: int = 8
    backfill: int = 3
    # Feeds on loopback, private, link-local and other internal addresses (an
    # intranet's) are fetched only when this is true.
    allow_private: bool = False


@dataclass(frozen=True)
class IngestSettings:
    """What counts as news when articles come in (files and feeds alike)."""

    # An article dated more than this many days before it comes in is kept (so
    # de-duplication knows it) but marked too old and offered to no edition; 0: no limit.
    max_age_days: int = 30


@dataclass(frozen=True)
class DkimSettings:
    selector: str = ""
    domain: str = ""
    private_key: str = ""               # RSA (2048 bits or more), PEM
    ed25519_selector: str = ""
    ed25519_private_key: str = ""       # Ed25519 (RFC 8463), PEM
    canonicalization: str = "relaxed/relaxed"

    @property
    def rsa(self) -> bool:
        return bool(self.selector and self.domain and self.private_key)

    @property
    def ed25519(self) -> bool:
        return bool(self.ed25519_selector and self.domain and self.ed25519_private_key)

    @property
    def enabled(self) -> bool:
        return self.rsa or self.ed25519


@dataclass(frozen=True)
class ScheduleSettings:
    cron: str = "0 8 * * mon"
    timezone: str = "UTC"
    misfire_grace: int = 6 * 3600
    local_time: bool = False
    retry_minutes: int = 5
    feeds_minutes: int = 30
    log_level: str = "INFO"
    # Whether an edition needs an editor: "none" sends at the slot as it is built;
    # "required" builds a draft draft_lead before the slot, mails the editors, and sends
    # only once approved; "veto" does the same but sends unless an editor cancelled it.
    approval: str = "none"
    draft_lead: str = "24h"

    @property
    def lead(self) -> timedelta:
        """draft_lead as a time span (checked when the config is read)."""
        return parse_span(self.draft_lead)


@dataclass(frozen=True)
class BouncesSettings:
    # VERP: the envelope sender of each message, "{token}" standing for a short signed
    # token naming the subscriber and the edition (e.g. "bounces+{token}@example.org").
    # Empty: the From address is the envelope sender.
    return_path: str = ""
    # The mailbox that bounces (and mails to unsubscribe_mailto) arrive in.
    protocol: str = "imap"
    host: str = ""
    port: int = 0                    # 0: 993 for IMAP, 995 for POP3 (143/110 without TLS)
    security: str = "ssl"            # ssl | starttls | none
    username: str = ""
    password: str = field(default="", repr=False)
    folder: str = "INBOX"
    # What happens to a message once read: moved to processed_folder (IMAP), or deleted.
    after: str = "move"
    processed_folder: str = "Processed"
    # A CA bundle to trust besides the system's (a mailbox with a private certificate).
    ca_file: str = ""
    timeout: float = 30.0
    poll_minutes: int = 15
    # A message bigger than this is not fetched: it stays in the mailbox for a person.
    # Every other message is fetched alone, so this bounds what a fetch holds in memory.
    max_message_bytes: int = 10_000_000
    # Mailman 3's bounce score: soft bounces add at most one point a day, the score is
    # forgotten after score_reset_days without one, and the subscriber is bounced at
    # score_threshold.
    score_threshold: int = 5
    score_reset_days: int = 7
    # The authserv-id of the server that receives the bounce mailbox's mail (the first
    # word of the Authentication-Results header it adds, RFC 8601). A mail to the
    # unsubscribe address acts when that header says its From address passed DKIM
    # (aligned) or DMARC. Empty: no server's verdict is believed, and only a reply to one
    # of our mails unsubscribes by mail.
    authserv_id: str = ""

    @property
    def mailbox_enabled(self) -> bool:
        return bool(self.host)


@dataclass(frozen=True)
class WebhooksSettings:
    # Amazon SES through SNS: the topic ARNs accepted, separated by commas or spaces
    # (empty: the SES webhook is off, since any AWS account can have SNS sign a message).
    ses_topic_arns: str = ""
    # Postmark: HTTP basic auth credentials put in the webhook URL.
    postmark_username: str = ""
    postmark_password: str = field(default="", repr=False)
    # Mailgun: the HTTP webhook signing key (secret).
    mailgun_signing_key: str = field(default="", repr=False)
    # SendGrid: the signed event webhook's verification key (public, base64 DER or PEM).
    sendgrid_public_key: str = ""
    # Requests older than this (or from the future by more) are replays.
    max_age_seconds: int = 300


@dataclass(frozen=True)
class TrackingSettings:
    # Click counts per edition and article (never per reader): read-more links go through
    # {base_url}/r/{token}, the same link in every subscriber's message. Off by default.
    clicks: bool = False
    # A scanner's burst: this many links of one edition from one address within
    # burst_seconds, and none of them counts.
    burst_clicks: int = 3
    burst_seconds: int = 10
    # A client network's requests of one edition's links while its counting is open:
    # beyond this many none of them counts, and the rest are only tallied.
    client_clicks: int = 50
    # How long an edition's counting stays open from its first click: then the random key
    # its clients were hashed with, and every hash, are deleted; only counts remain.
    count_hours: int = 24
    # Clicks as a ranking signal: a source whose stories readers clicked more than their
    # share of the last few editions' articles ranks higher (its stories' score × 0.5–2).
    rank_by_clicks: bool = False


@dataclass(frozen=True)
class AdminSettings:
    # The admin pages (/admin on `digest serve`): how long a sign-in lasts, and how many
    # sign-in attempts on an account (known or not) from one client network within
    # lockout_minutes lock it for that network for lockout_minutes
    # (digest.audience.admins has the whole rule).
    session_hours: int = 12
    lockout_failures: int = 5
    lockout_minutes: int = 15


@dataclass(frozen=True)
class WebSettings:
    # How many proxies in front of `digest serve` append to X-Forwarded-For (0: none, so
    # the header is ignored and nobody can pick their own rate-limit bucket with it).
    trusted_proxies: int = 0
    # Caps on the mails the public sign-up form sends, whoever asks: at most this many
    # sign-up mails (confirmation or "already subscribed") to one mailbox per
    # signup_mailbox_hours (its +tag variants, and gmail.com's dot variants, are one
    # mailbox), at most signup_mails_per_hour to everyone together, and none queued while
    # the outbox holds signup_outbox_limit unsent mails.
    signup_mails_per_mailbox: int = 1
    signup_mailbox_hours: int = 24
    signup_mails_per_hour: int = 200
    signup_outbox_limit: int = 500


# The signing secret `digest init` writes when DIGEST_SECRET_KEY is not used.
SECRET_FILE = "secret.key"
# An SQLite store's file in its URL (sqlite:///relative.db, sqlite:////abs.db, with a
# driver name or a query or not); an in-memory database names none. Read here without
# SQLAlchemy: the config sits below the store.
_SQLITE_FILE = re.compile(r"(?P<prefix>sqlite(?:\+\w+)?:///)(?P<path>(?!:memory:)[^?]+)"
                          r"(?P<query>\?.*)?$")


@dataclass(frozen=True)
class Settings:
    digest: DigestSettings = DigestSettings()
    store: StoreSettings = StoreSettings()
    smtp: SmtpSettings = SmtpSettings()
    delivery: DeliverySettings = DeliverySettings()
    schedule: ScheduleSettings = ScheduleSettings()
    fetch: FetchSettings = FetchSettings()
    ingest: IngestSettings = IngestSettings()
    dkim: DkimSettings = DkimSettings()
    web: WebSettings = WebSettings()
    bounces: BouncesSettings = BouncesSettings()
    webhooks: WebhooksSettings = WebhooksSettings()
    grouping: GroupingSettings = GroupingSettings()
    tracking: TrackingSettings = TrackingSettings()
    admin: AdminSettings = AdminSettings()
    topics: tuple[TopicRule, ...] = ()
    feeds: tuple[FeedSettings, ...] = ()
    secret_key: str = field(default="", repr=False)
    config_path: Path | None = None
    # What the operator should know about their config (retired keys still in it).
    notices: tuple[str, ...] = ()

    @property
    def topic_names(self) -> tuple[str, ...]:
        """Configured topics in config order, then the catch-all."""
        names = tuple(t.name for t in self.topics)
        if self.digest.catch_all_topic not in names:
            names += (self.digest.catch_all_topic,)
        return names

    @property
    def base_dir(self) -> Path:
        """Where relative paths in the config are resolved: the config file's folder."""
        return self.config_path.parent if self.config_path else Path.cwd()

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    @property
    def store_url(self) -> str:
        """store.url with a relative SQLite path resolved against the config's folder."""
        url = self.store.url
        match = _SQLITE_FILE.match(url)
        if match and not match["path"].startswith("/"):
            return f"{match['prefix']}{self.resolve_path(match['path'])}{match['query'] or ''}"
        return url

    @property
    def secret_file(self) -> Path:
        """Where `digest init` keeps the signing secret: beside an SQLite store's file, or
        beside the config file for a server database."""
        match = _SQLITE_FILE.match(self.store_url)
        return (Path(match["path"]).parent if match else self.base_dir) / SECRET_FILE

    @property
    def signing_key(self) -> bytes:
        """The secret that signs unsubscribe/preferences/confirm links and the web forms:
        DIGEST_SECRET_KEY, else the secret file `digest init` wrote. ConfigError when there
        is neither: a guessable key would let anyone forge links."""
        if self.secret_key:
            if len(self.secret_key) < 32:
                raise ConfigError("DIGEST_SECRET_KEY has fewer than 32 characters, too short to "
                                  "sign links with; use a long random value, e.g. from: python3 "
                                  "-c 'import secrets; print(secrets.token_urlsafe(32))'")
            return self.secret_key.encode()
        path = self.secret_file
        fix = f"set DIGEST_SECRET_KEY, or run: digest init {self.base_dir}"
        try:
            key = path.read_bytes().strip()
        except FileNotFoundError:
            raise ConfigError(f"no key to sign links with: DIGEST_SECRET_KEY is not set and "
                              f"{path} does not exist; {fix}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read the signing key {path} ({exc.strerror}); "
                              f"{fix}") from None
        if len(key) < 32:
            raise ConfigError(f"{path} holds fewer than 32 characters, too short to sign "
                              f"links with; delete it and {fix}")
        return key


# A century: more is no limit at all (use 0), and a date that far back is out of range.
_MAX_AGE_DAYS = 36_500

_SECTIONS: dict[str, type] = {
    "digest": DigestSettings,
    "store": StoreSettings,
    "smtp": SmtpSettings,
    "delivery": DeliverySettings,
    "schedule": ScheduleSettings,
    "fetch": FetchSettings,
    "ingest": IngestSettings,
    "dkim": DkimSettings,
    "web": WebSettings,
    "bounces": BouncesSettings,
    "webhooks": WebhooksSettings,
    "grouping": GroupingSettings,
    "tracking": TrackingSettings,
    "admin": AdminSettings,
}
# Settings that were, and what took their place.
_RETIRED = {("digest", "bounce_threshold"): "a hard bounce now bounces a subscriber at once, "
            "and soft bounces count towards [bounces] score_threshold; it is ignored "
            "(remove it)",
            ("grouping", "min_confidence"): "a topic's confidence is now its margin over "
            "the subjects no topic covers, set by [grouping] min_margin (-0.1 by default); "
            "the old similarity threshold is ignored (remove it)"}
# TOML names that are Python keywords.
_KEY_ALIASES = {"from": "from_"}
_ENV_ONLY = {("smtp", "password"), ("bounces", "password"), ("webhooks", "postmark_password"),
             ("webhooks", "mailgun_signing_key")}
_CHOICES = {
    ("smtp", "security"): ("none", "starttls", "ssl"),
    ("delivery", "transport"): ("smtp", "maildir"),
    ("schedule", "log_level"): ("DEBUG", "INFO", "WARNING", "ERROR"),
    ("bounces", "protocol"): ("imap", "pop3"),
    ("bounces", "security"): ("ssl", "starttls", "none"),
    ("bounces", "after"): ("move", "delete"),
    ("grouping", "method"): ("semantic", "keywords"),
    ("schedule", "approval"): ("none", "required", "veto"),
    ("dkim", "canonicalization"): ("relaxed/relaxed", "simple/simple", "relaxed/simple",
                                   "simple/relaxed"),
}


def default_topics() -> tuple[TopicRule, ...]:
    """The topics of the shipped config.example.toml: the one list of default topics."""
    example = tomllib.loads(package_resource("config.example.toml").read_text("utf-8"))
    return _topics(example["topics"], "config.example.toml")


def find_config_file(explicit: str | os.PathLike[str] | None,
                     environ: Mapping[str, str] | None = None) -> Path | None:
    """``--config``, then ``$DIGEST_CONFIG``, then ``./digest.toml``; None when none exists."""
    env = os.environ if environ is None else environ
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found (create one with: digest init)")
        return path.resolve()
    if env.get("DIGEST_CONFIG"):
        path = Path(env["DIGEST_CONFIG"])
        if not path.is_file():
            raise ConfigError(f"DIGEST_CONFIG points to {path}, which does not exist")
        return path.resolve()
    local = Path("digest.toml")
    return local.resolve() if local.is_file() else None


_SPAN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(m|min|h|d)\s*", re.IGNORECASE)
_SPAN_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_span(text: str) -> timedelta:
    """"24h", "90m", "2d" as a time span; ValueError for anything else."""
    match = _SPAN.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a time span such as 24h, 90m or 2d")
    return timedelta(seconds=float(match[1]) * _SPAN_UNITS[match[2].lower()])


def _coerce(value: Any, default: Any, where: str) -> Any:
    kind = type(default)
    if kind is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(i.strip() for i in items if i.strip())
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false",
                                                        "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}") from None
    if kind is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _build_section(name: str, raw: Mapping[str, Any], origin: str,
                   notices: list[str] | None = None) -> Any:
    cls = _SECTIONS[name]
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        attr = _KEY_ALIASES.get(key, key)
        where = f"{origin}: [{name}] {key}"
        if (name, key) in _RETIRED:
            # Configs written by `digest init` before carry it: say so, never refuse them.
            if notices is not None:
                notices.append(f"{where} is no longer a setting: {_RETIRED[name, key]}")
            continue
        if attr not in known:
            names = ", ".join(sorted(_toml_key(k) for k in known))
            raise ConfigError(f"{where} is not a setting; known keys: {names}")
        if (name, key) in _ENV_ONLY and not origin.startswith("environment"):
            raise ConfigError(f"{where}: secrets do not belong in files; remove it and set "
                              f"DIGEST_{name.upper()}__{key.upper()} in the environment")
        values[attr] = _coerce(value, known[attr].default, where)
        choices = _CHOICES.get((name, key))
        if choices and values[attr] not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return values


def _toml_key(attr: str) -> str:
    return next((k for k, a in _KEY_ALIASES.items() if a == attr), attr)


def _topics(raw: Any, origin: str) -> tuple[TopicRule, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{origin}: [[topics]] must be a list of tables with name and keywords")
    rules = []
    seen: dict[str, str] = {}
    for i, item in enumerate(raw, 1):
        where = f"{origin}: topic #{i}"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                or not item["name"].strip():
            raise ConfigError(f"{where} needs a name, e.g. name = \"AI\"")
        keywords = item.get("keywords", [])
        if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
            raise ConfigError(f"{where} ({item['name']}): keywords must be a list of strings")
        description = item.get("description", "")
        if not isinstance(description, str):
            raise ConfigError(f"{where} ({item['name']}): description must be a string")
        aliases = item.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise ConfigError(f"{where} ({item['name']}): aliases must be a list of strings")
        extra = set(item) - {"name", "keywords", "description", "aliases"}
        if extra:
            raise ConfigError(f"{where} ({item['name']}): unknown key(s) "
                              f"{', '.join(sorted(extra))}")
        name = item["name"].strip()
        if name.casefold() in seen:
            raise ConfigError(f"{where}: topic {name!r} is listed twice")
        seen[name.casefold()] = name
        words = tuple(k.strip() for k in keywords if k.strip())
        others = tuple(dict.fromkeys(a.strip() for a in aliases if a.strip()))
        rules.append(TopicRule(name, words, " ".join(description.split()), others))
    _check_aliases(rules, origin)
    return tuple(rules)


def _check_aliases(rules: Sequence[TopicRule], origin: str) -> None:
    """An alias names one topic only: never another topic's name or alias."""
    owner = {rule.name.casefold(): rule.name for rule in rules}
    for rule in rules:
        for alias in rule.aliases:
            other = owner.get(alias.casefold())
            if other is not None and other != rule.name:
                raise ConfigError(f"{origin}: topic {rule.name!r}: alias {alias!r} already "
                                  f"names the topic {other!r}; an alias names one topic")
            owner[alias.casefold()] = rule.name


def _feeds(raw: Any, origin: str) -> tuple[FeedSettings, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{origin}: [[feeds]] must be a list of tables with url, name, topic")
    feeds = []
    for i, item in enumerate(raw, 1):
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            raise ConfigError(f"{origin}: feed #{i} needs a url")
        extra = set(item) - {"url", "name", "topic", "weight"}
        if extra:
            raise ConfigError(f"{origin}: feed #{i}: unknown key(s) {', '.join(sorted(extra))}")
        if isinstance(item.get("weight"), bool):
            raise ConfigError(f"{origin}: feed #{i} weight: expected a number, got "
                              f"{item['weight']!r}")
        weight = _coerce(item.get("weight", 1.0), 1.0, f"{origin}: feed #{i} weight")
        if not 0 < weight <= 100:
            raise ConfigError(f"{origin}: feed #{i}: weight must be more than 0 and at most "
                              f"100 (1 is the default; 2 counts its stories double)")
        feeds.append(FeedSettings(item["url"], str(item.get("name", "")),
                                  str(item.get("topic", "")), weight))
    return tuple(feeds)


def load_settings(config: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Read the config file (if any) and the environment into frozen Settings."""
    env = os.environ if environ is None else environ
    path = find_config_file(config, env)
    data: dict[str, Any] = {}
    origin = str(path) if path else "defaults"
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from None

    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    notices: list[str] = []
    for key, value in data.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: [{key}] must be a table")
            sections[key].update(_build_section(key, value, origin, notices))
        elif key not in ("topics", "feeds"):
            raise ConfigError(f"{origin}: unknown section [{key}]; known: "
                              f"{', '.join([*_SECTIONS, 'topics', 'feeds'])}")

    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX):].lower().partition("__")
        if section not in _SECTIONS:
            continue
        sections[section].update(_build_section(section, {key: value}, f"environment {name}",
                                                notices))

    topics = _topics(data["topics"], origin) if "topics" in data else default_topics()
    feeds = _feeds(data["feeds"], origin) if "feeds" in data else ()
    settings = Settings(
        **{name: cls(**sections[name]) for name, cls in _SECTIONS.items()},
        topics=topics,
        feeds=feeds,
        secret_key=env.get("DIGEST_SECRET_KEY", ""),
        config_path=path,
        notices=tuple(notices),
    )
    _validate(settings, origin)
    _validate_text(settings, origin)
    return settings


def _validate(s: Settings, origin: str) -> None:
    d = s.digest
    if d.teaser_words < 5:
        raise ConfigError(f"{origin}: [digest] teaser_words must be at least 5 "
                          f"(got {d.teaser_words})")
    if d.max_articles < 1:
        raise ConfigError(f"{origin}: [digest] max_articles must be at least 1")
    if d.min_articles < 0:
        raise ConfigError(f"{origin}: [digest] min_articles cannot be negative")
    if not d.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{origin}: [digest] base_url must start with https:// "
                          f"(got {d.base_url!r})")
    _validate_dkim(s, origin)
    if s.web.trusted_proxies < 0:
        raise ConfigError(f"{origin}: [web] trusted_proxies must be 0 or more (the number of "
                          f"proxies in front of digest serve)")
    for key in ("signup_mails_per_mailbox", "signup_mailbox_hours", "signup_mails_per_hour",
                "signup_outbox_limit"):
        if getattr(s.web, key) < 1:
            raise ConfigError(f"{origin}: [web] {key} must be at least 1 "
                              f"(got {getattr(s.web, key)})")
    if s.smtp.connections < 1:
        raise ConfigError(f"{origin}: [smtp] connections must be at least 1")
    if s.fetch.deadline_seconds <= 0:
        raise ConfigError(f"{origin}: [fetch] deadline_seconds must be more than 0 "
                          f"(got {s.fetch.deadline_seconds:g})")
    if not 0 <= s.ingest.max_age_days <= _MAX_AGE_DAYS:
        raise ConfigError(f"{origin}: [ingest] max_age_days must be 0 (no limit) to "
                          f"{_MAX_AGE_DAYS} days (got {s.ingest.max_age_days})")
    try:
        ZoneInfo(s.schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{origin}: [schedule] timezone {s.schedule.timezone!r} is not an IANA "
                          f"zone name such as Europe/Berlin") from None
    _validate_grouping(s.grouping, origin)
    _validate_feed_topics(s, origin)
    _validate_desk(s, origin)


def _validate_feed_topics(s: Settings, origin: str) -> None:
    """A feed's topic names a configured topic (by name or alias) or the catch-all: an
    unknown one would make a section no config lists."""
    names = {n.casefold() for t in s.topics for n in (t.name, *t.aliases)}
    catch_all = s.digest.catch_all_topic
    for alias in (a for t in s.topics for a in t.aliases):
        if alias.casefold() == catch_all.casefold():
            raise ConfigError(f"{origin}: alias {alias!r} is the catch-all topic's name "
                              f"([digest] catch_all_topic)")
    names.add(catch_all.casefold())
    for i, feed in enumerate(s.feeds, 1):
        if feed.topic.strip() and feed.topic.strip().casefold() not in names:
            raise ConfigError(f"{origin}: feed #{i} ({feed.name or feed.url}): topic "
                              f"{feed.topic!r} is not a configured topic; choose one of "
                              f"{', '.join(s.topic_names)}, or add it to [[topics]] (or "
                              f"to a topic's aliases)")


def _validate_dkim(s: Settings, origin: str) -> None:
    k = s.dkim
    ed = (k.ed25519_selector, k.ed25519_private_key)
    if (k.selector or k.private_key or (k.domain and not any(ed))) and not k.rsa:
        raise ConfigError(f"{origin}: [dkim] needs selector, domain and private_key together "
                          f"(or none of them to send unsigned)")
    if any(ed) and not k.ed25519:
        raise ConfigError(f"{origin}: [dkim] needs ed25519_selector, domain and "
                          f"ed25519_private_key together (or none of them)")
    for key, wanted in (("private_key", k.rsa), ("ed25519_private_key", k.ed25519)):
        path = s.resolve_path(getattr(k, key))
        if wanted and not path.is_file():
            raise ConfigError(f"{origin}: [dkim] {key} {path} does not exist; point it at "
                              f"the PEM file of the selector's key")


# The longest story window or half-life: ten years, in hours.
_MAX_HOURS = 87_600


def _validate_grouping(g: GroupingSettings, origin: str) -> None:
    if not -1 <= g.min_margin <= 1:
        raise ConfigError(f"{origin}: [grouping] min_margin must be between -1 and 1 "
                          f"(got {g.min_margin:g})")
    if not 0 <= g.story_threshold <= 1:
        raise ConfigError(f"{origin}: [grouping] story_threshold must be between 0 and 1 "
                          f"(got {g.story_threshold:g})")
    for key in ("story_window_hours", "half_life_hours"):
        # nan and inf pass a plain comparison; a window of inf hours is no time span.
        if not 0 < getattr(g, key) <= _MAX_HOURS:
            raise ConfigError(f"{origin}: [grouping] {key} must be more than 0 and at "
                              f"most {_MAX_HOURS} hours (got {getattr(g, key):g})")


def _validate_desk(s: Settings, origin: str) -> None:
    """[schedule] approval and draft_lead, [digest] editors, [tracking], [admin]."""
    try:
        lead = parse_span(s.schedule.draft_lead)
    except ValueError as exc:
        raise ConfigError(f"{origin}: [schedule] draft_lead: {exc}") from None
    if not timedelta(0) < lead <= timedelta(days=30):
        raise ConfigError(f"{origin}: [schedule] draft_lead must be more than 0 and at most "
                          f"30 days (got {s.schedule.draft_lead!r})")
    for address in s.digest.editors:
        if not re.fullmatch(r"[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+", address):
            raise ConfigError(f"{origin}: [digest] editors: {address!r} is not an address "
                              f"such as editor@example.org")
    if s.schedule.approval != "none" and not s.digest.editors:
        raise ConfigError(f"{origin}: [schedule] approval = {s.schedule.approval!r} needs "
                          f"someone to approve: list them in [digest] editors")
    t, a = s.tracking, s.admin
    if t.burst_clicks < 2 or t.burst_seconds < 1:
        raise ConfigError(f"{origin}: [tracking] burst_clicks must be at least 2 and "
                          f"burst_seconds at least 1")
    if t.client_clicks < 1 or not 1 <= t.count_hours <= 24 * 31:
        raise ConfigError(f"{origin}: [tracking] client_clicks must be at least 1 and "
                          f"count_hours from 1 to 744 (31 days)")
    if a.session_hours < 1 or a.lockout_failures < 1 or a.lockout_minutes < 1:
        raise ConfigError(f"{origin}: [admin] session_hours, lockout_failures and "
                          f"lockout_minutes must each be at least 1")


def _validate_text(s: Settings, origin: str) -> None:
    """The patterns and addresses of [digest], checked when the config is read rather than
    halfway through an edition."""
    d = s.digest
    patterns = (("subject", d.subject, "{name}, {date}, {number}, {count}, {top_story}",
                 {"name": "", "date": "", "number": 1, "count": 1, "top_story": ""}),
                ("utm_campaign", d.utm_campaign, "{number}", {"number": 1}))
    for key, pattern, allowed, sample in patterns:
        try:
            pattern.format(**sample)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"{origin}: [digest] {key} {pattern!r} is invalid ({exc!r}); it "
                              f"may use {allowed}") from None
    _validate_bounces(s.bounces, origin)
    mailto = d.unsubscribe_mailto
    if mailto and (mailto.lower().startswith("mailto:") or not re.fullmatch(
            r"[^@\s<>?,;\"]+@[^@\s<>?,;\"]+", mailto)):
        bare = mailto.split(":", 1)[-1].split("?", 1)[0].strip("<> ")
        raise ConfigError(f"{origin}: [digest] unsubscribe_mailto {mailto!r} must be a bare "
                          f"address (the List-Unsubscribe header adds mailto: and the "
                          f"subject), e.g. {bare if '@' in bare else 'unsubscribe@example.org'}")
    if d.reply_to and "@" not in parseaddr(d.reply_to)[1]:
        raise ConfigError(f"{origin}: [digest] reply_to {d.reply_to!r} has no address; use "
                          f"\"Name <name@example.org>\" or leave it empty")


def _validate_bounces(b: BouncesSettings, origin: str) -> None:
    rp = b.return_path
    if rp and (rp.count("{token}") != 1 or "@" not in rp.partition("{token}")[2]
               or re.search(r"[\s<>\"]", rp)):
        raise ConfigError(f"{origin}: [bounces] return_path {rp!r} must be an address with "
                          f"{{token}} once in its local part, e.g. "
                          f"\"bounces+{{token}}@example.org\"")
    if b.authserv_id and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", b.authserv_id):
        raise ConfigError(f"{origin}: [bounces] authserv_id {b.authserv_id!r} is not a host "
                          f"name; give the first word of the Authentication-Results header "
                          f"the receiving server adds (e.g. \"mx.example.org\"), or leave it "
                          f"empty")
    if b.score_threshold < 1 or b.score_reset_days < 1 or b.poll_minutes < 1:
        raise ConfigError(f"{origin}: [bounces] score_threshold, score_reset_days and "
                          f"poll_minutes must each be at least 1")
    if not 10_000 <= b.max_message_bytes <= 1_000_000_000:
        raise ConfigError(f"{origin}: [bounces] max_message_bytes = {b.max_message_bytes} "
                          f"is out of range: give a size in bytes from 10000 to 1000000000 "
                          f"(the default is 10000000, 10 MB)")


def with_overrides(settings: Settings, **sections: Mapping[str, Any]) -> Settings:
    """A copy of settings with some section values replaced (used by demo and tests)."""
    changes = {name: replace(getattr(settings, name), **values)
               for name, values in sections.items()}
    return dataclasses.replace(settings, **changes)
