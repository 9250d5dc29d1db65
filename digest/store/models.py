"""The store's tables as SQLAlchemy 2.0 typed models, and the lifecycle enums."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "AdminSession",
    "AdminUser",
    "Article",
    "Base",
    "BounceEvent",
    "BounceKind",
    "Click",
    "ClickKey",
    "ClickTally",
    "Delivery",
    "DeliveryStatus",
    "ArticleSource",
    "Edition",
    "EditionStatus",
    "Feed",
    "HeldReport",
    "HeldStatus",
    "OutboxMail",
    "RateLimitHit",
    "Source",
    "Subscriber",
    "SubscriberStatus",
    "Suppression",
    "SuppressionReason",
]


def _written_at() -> datetime:
    # Only the default of a record's own created_at/updated_at (when the row was written,
    # for people reading it later). Columns that decisions read (added_at, due times,
    # consent) are always given the caller's clock's time.
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC, on every backend alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware one")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=16, validate_strings=True,
                values_callable=lambda e: [m.value for m in e])


class SubscriberStatus(enum.StrEnum):
    PENDING = "pending"          # signed up, not yet confirmed
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    REMOVED = "removed"          # erased on request: only a hash of the address is kept


class EditionStatus(enum.StrEnum):
    DRAFT = "draft"              # articles reserved, no ledger: the editor shapes it
    APPROVED = "approved"        # an editor approved it: `digest send` (or its slot) sends it
    SENDING = "sending"          # ledger written; deliveries pending or in progress
    PAUSED = "paused"            # too many errors in a row; resume with `digest send`
    SENT = "sent"                # no delivery left pending (deferred ones may retry)
    CANCELLED = "cancelled"      # never sent; its articles went back to the pool


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"          # claimed by a sender under a lease
    SENT = "sent"
    DEFERRED = "deferred"        # temporary failure; retried at next_attempt_at
    FAILED = "failed"            # permanent failure (5xx) or out of attempts
    SKIPPED = "skipped"          # nothing new in the subscriber's topics


class BounceKind(enum.StrEnum):
    HARD = "hard"                # the address does not exist or is disabled
    SOFT = "soft"                # full, blocked by policy, too large, network, expired
    COMPLAINT = "complaint"      # an ARF abuse report (the reader pressed "spam")
    AUTO_REPLY = "auto-reply"    # vacation and other RFC 3834 replies: never a bounce


class SuppressionReason(enum.StrEnum):
    UNSUBSCRIBED = "unsubscribed"    # may come back through double opt-in
    COMPLAINED = "complained"
    HARD_BOUNCED = "hard-bounced"
    BOUNCED = "bounced"              # soft bounces reached bounces.score_threshold
    ERASED = "erased"                # kept as a keyed hash only
    MANUAL = "manual"


class Base(DeclarativeBase):
    pass


class Source(Base):
    __tablename__ = "sources"
    __table_args__ = (UniqueConstraint("kind", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))      # file | feed | cli | web
    name: Mapped[str] = mapped_column(String(300))
    url: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_written_at)
    # How much its stories count in the ranking ([[feeds]] weight; 1 for every other).
    weight: Mapped[float] = mapped_column(Float, default=1.0, server_default="1")


class Article(Base):
    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id"))
    title: Mapped[str] = mapped_column(String(1000))
    url: Mapped[str | None] = mapped_column(String(2000))
    canonical_url: Mapped[str | None] = mapped_column(String(2000), unique=True)
    author: Mapped[str | None] = mapped_column(String(300))
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    summary: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text, default="")
    body_html: Mapped[str | None] = mapped_column(Text)   # nh3-sanitised, when the input had HTML
    topic: Mapped[str] = mapped_column(String(100), index=True)
    # What chose the topic: explicit, manual, feed, tag, semantic, keyword, catch-all (or
    # "before", for articles stored before reasons were kept); a semantic choice's
    # similarity; the article's meaning (content.semantic: 256 float16).
    topic_reason: Mapped[str] = mapped_column(String(16), default="before",
                                              server_default="before")
    topic_confidence: Mapped[float | None] = mapped_column(Float)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The editor's hand in the article's edition (an article is in one edition at most):
    # its place among its topic's stories (None: by score), leading the whole edition,
    # and the title and teaser it shows there instead of its own.
    position: Mapped[int | None] = mapped_column(Integer)
    pin_top: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    edited_title: Mapped[str | None] = mapped_column(String(1000))
    edited_teaser: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    edition_id: Mapped[int | None] = mapped_column(ForeignKey("editions.id"), index=True)
    # A new feed's back catalogue: stored (for de-duplication) but never "new".
    is_backlog: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Removed by the operator: a tombstone, kept (title, content hash, canonical URL) so
    # de-duplication still knows it, but never in an edition, a list or the archive again.
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Where published_at came from: the record (JSON, feed), its page (meta tags, JSON-LD,
    # URL), its text (a dateline), or "imported" (undated: published_at is None and the
    # article ranks by added_at, never as brand new); a date in the future is clamped to
    # the import time and noted.
    date_source: Mapped[str] = mapped_column(String(8), default="record",
                                             server_default="record")
    date_clamped: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Older than [ingest] max_age_days when it came in: kept for de-duplication, offered
    # to no edition unless an editor adds it.
    too_old: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    source: Mapped[Source | None] = relationship(lazy="joined")
    also_from: Mapped[list[Source]] = relationship(secondary="article_sources", lazy="selectin",
                                                   order_by="Source.id")

    @property
    def source_name(self) -> str | None:
        """Every source that carried this article, the first one first."""
        names = [s.name for s in ([self.source] if self.source else []) + self.also_from]
        return " · ".join(dict.fromkeys(names)) or None


class ArticleSource(Base):
    """Further sources of an article that came in more than once (the same story twice)."""

    __tablename__ = "article_sources"

    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id"), primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"), primary_key=True)
    url: Mapped[str | None] = mapped_column(String(2000))


class Feed(Base):
    """A polled feed and its health."""

    __tablename__ = "feeds"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    topic: Mapped[str | None] = mapped_column(String(100))
    backfill: Mapped[int] = mapped_column(Integer, default=3)
    from_config: Mapped[bool] = mapped_column(Boolean, default=False)
    etag: Mapped[str | None] = mapped_column(String(500))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    last_fetch_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(Text)
    items_added: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_written_at)


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    # Lower-cased address: uniqueness is case-insensitive.
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    # Stores older than the suppression list kept a removed subscriber as an unkeyed hash
    # of the address in email_key ("removed:HASH:…"); the hash alone, here, is what an
    # import or `add` looks up by equality (a LIKE 'removed:HASH%' scans every row).
    removed_hash: Mapped[str | None] = mapped_column(String(40), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[SubscriberStatus] = mapped_column(_enum(SubscriberStatus),
                                                     default=SubscriberStatus.ACTIVE, index=True)
    topics: Mapped[list[str]] = mapped_column(JSON, default=list)   # empty: every topic
    timezone: Mapped[str | None] = mapped_column(String(64))
    # Bumped to revoke every token issued so far (unsubscribe, preferences).
    token_version: Mapped[int] = mapped_column(Integer, default=1)
    hard_bounces: Mapped[int] = mapped_column(Integer, default=0)
    # Mailman 3's bounce score (soft bounces, at most one point a day) and its last bounce.
    bounce_score: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_bounce_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # How they consented: "cli", "import", "sign-up", …; when; from which client address
    # (web sign-ups); when they confirmed (double opt-in).
    consent_source: Mapped[str | None] = mapped_column(String(300))
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consent_ip: Mapped[str | None] = mapped_column(String(64))
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_written_at)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_written_at,
                                                 onupdate=_written_at)


class Edition(Base):
    __tablename__ = "editions"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    cutoff: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_written_at)
    subject: Mapped[str] = mapped_column(String(998))
    status: Mapped[EditionStatus] = mapped_column(_enum(EditionStatus),
                                                  default=EditionStatus.SENDING)
    # The scheduler's slot (its scheduled time) that made this edition, when it did.
    slot: Mapped[datetime | None] = mapped_column(UTCDateTime, unique=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(Text)
    # The editor's note above the contents (Markdown source), whether the subject is the
    # editor's own (kept when the draft is refreshed), the approval, and the mails that
    # asked the editors to review it and reminded them.
    intro: Mapped[str | None] = mapped_column(Text)
    subject_set: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    approved_by: Mapped[str | None] = mapped_column(String(320))
    review_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    articles: Mapped[list[Article]] = relationship(order_by=Article.id)

    @property
    def date(self) -> datetime:
        """The date the edition carries (dateline, the subject's {date}, the age of its
        stories): the slot it goes out at, else its cut-off. A draft made a day ahead of
        its slot is dated the day readers get it."""
        return self.slot or self.cutoff


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("edition_id", "subscriber_id"),
        Index("ix_deliveries_edition_status", "edition_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id"))
    # The subscriber's effective topic set for this edition ("" means every topic).
    variant: Mapped[str] = mapped_column(String(1000), default="")
    status: Mapped[DeliveryStatus] = mapped_column(_enum(DeliveryStatus),
                                                   default=DeliveryStatus.PENDING)
    message_id: Mapped[str] = mapped_column(String(300))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When local-time delivery is on: not before this moment.
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    subscriber: Mapped[Subscriber] = relationship()


class OutboxMail(Base):
    """A transactional mail (a sign-up confirmation) waiting for the background sender:
    a web request only adds a row, so it never waits for the SMTP server. Sent rows are
    deleted."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    # For log lines (never the address or the message: the message holds a signed link).
    subscriber_id: Mapped[int | None] = mapped_column(Integer)
    sender: Mapped[str] = mapped_column(String(320))
    recipient: Mapped[str] = mapped_column(String(320))
    message: Mapped[bytes] = mapped_column(LargeBinary)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # A sender claims a row until then, so two processes never send it twice.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_written_at)


class RateLimitHit(Base):
    """One fixed-window rate-limit counter (Flask-Limiter's key: client, limit, route),
    shared by every thread and process that serves the web pages."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(500), primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)
    # Seconds since the epoch, as the limits library counts them.
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class AdminUser(Base):
    """Someone who may use the admin pages: an argon2 hash of their password, never it."""

    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_written_at)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AdminSession(Base):
    """A signed-in admin: the SHA-256 of the random cookie value (the value itself is
    never stored), the session's CSRF token, and when it ends."""

    __tablename__ = "admin_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("admin_users.id"))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_written_at)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Click(Base):
    """One request for a tracked "read more" link that was a reader's candidate click. It
    names the edition and the article, never a reader; while the edition's counting is
    open `client` is a hash of the requesting network keyed by the edition's ClickKey (to
    tell a repeat, a burst or a network over its limit), "" once counting closed and the
    key is gone; `reason` says why it was or was not counted. Requests that never count
    (HEAD, scanners, early, over a network's limit) are no rows: ClickTally."""

    __tablename__ = "clicks"
    __table_args__ = (Index("ix_clicks_edition_article", "edition_id", "article_id"),
                      Index("ix_clicks_client_at", "client", "at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id"))
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    client: Mapped[str] = mapped_column(String(64))
    counted: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(16))
    # When the limit rule took a counted click back (rankings made before still count it).
    uncounted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ClickTally(Base):
    """How many requests of one article's tracked link in one edition were not counted
    for one reason (head, scanner, early, limit, dropped, and once counting closed burst
    and repeat): one row per (edition, article, reason), whatever the number of requests."""

    __tablename__ = "click_tallies"
    __table_args__ = (UniqueConstraint("edition_id", "article_id", "reason"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id"))
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id"))
    reason: Mapped[str] = mapped_column(String(16))
    requests: Mapped[int] = mapped_column(Integer)


class ClickKey(Base):
    """The random key the clients of an edition's clicks are hashed with while its
    counting is open ([tracking] count_hours from the first click); deleted, with every
    hash made with it, when counting closes."""

    __tablename__ = "click_keys"

    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Suppression(Base):
    """An address never to mail. email_key is the lower-cased address, or for an erased
    person ``hmac:`` and a keyed hash of it (nothing personal)."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    reason: Mapped[SuppressionReason] = mapped_column(_enum(SuppressionReason))
    source: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_written_at)


class BounceEvent(Base):
    """One bounce, complaint or auto-reply about one recipient, from wherever it came
    (the SMTP session, a bounce mailbox, a provider's webhook)."""

    __tablename__ = "bounce_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id"), index=True)
    edition_id: Mapped[int | None] = mapped_column(ForeignKey("editions.id"))
    recipient: Mapped[str] = mapped_column(String(320))
    kind: Mapped[BounceKind] = mapped_column(_enum(BounceKind))
    status: Mapped[str | None] = mapped_column(String(16))     # enhanced status, e.g. 5.1.1
    reason: Mapped[str] = mapped_column(String(500), default="")
    source: Mapped[str] = mapped_column(String(500), default="")
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_written_at)
    # When digest learned of it (a mailbox of old bounces is read today).
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_written_at, index=True)
    # The same report read twice (a mailbox re-read, a webhook retried) is one event.
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)


class HeldStatus(enum.StrEnum):
    HELD = "held"                # waiting for an editor
    APPLIED = "applied"          # an editor applied it
    DISMISSED = "dismissed"      # an editor threw it away


class HeldReport(Base):
    """A report from the bounce mailbox that changed nobody because nothing tied it to
    mail this store sent (no valid VERP token, no Message-ID of ours, an unauthenticated
    sender, too many recipients): what it claims, kept for an editor to apply or dismiss."""

    __tablename__ = "held_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(500), default="")
    # The same message read twice (a mailbox re-read) is held once.
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    summary: Mapped[str] = mapped_column(String(500), default="")     # what it claims
    held_because: Mapped[str] = mapped_column(String(500), default="")
    # The findings (JSON) and the unsubscribe request, as the reading had them.
    claims: Mapped[str] = mapped_column(Text, default="[]")
    unsubscribe: Mapped[str | None] = mapped_column(String(320))
    status: Mapped[HeldStatus] = mapped_column(_enum(HeldStatus), default=HeldStatus.HELD,
                                               index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(500), default="")
