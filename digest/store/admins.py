"""Queries of the admin pages: the people who may sign in (admin_users), their sessions
(admin_sessions: the SHA-256 of each cookie value, never the value), and the subscriber
search of the subscribers page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update

from .db import Store, StoreConflict, rowcount
from .models import AdminSession, AdminUser, Edition, Subscriber, SubscriberStatus

__all__ = ["SessionRow", "SubscriberPage", "delete_session", "delete_user", "edition_numbers",
           "find_user",
           "insert_user", "list_users", "search_subscribers",
           "session_row", "set_password_hash", "signed_in",
           "subscriber_email"]


@dataclass(frozen=True)
class SessionRow:
    """A live session with its user."""

    user_id: int
    email: str
    csrf: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class SubscriberPage:
    """One page of a subscriber search, and how many match in all."""

    rows: list[Subscriber]
    total: int


def insert_user(store: Store, email: str, email_key: str, password_hash: str,
                now: datetime) -> AdminUser | None:
    """A new admin user; None when one with this email_key exists (also when another
    process added it a moment ago)."""
    try:
        with store.writes.begin() as session:
            if session.scalar(select(AdminUser.id).where(AdminUser.email_key == email_key)):
                return None
            user = AdminUser(email=email, email_key=email_key, password_hash=password_hash,
                             created_at=now)
            session.add(user)
    except StoreConflict:
        return None
    return user


def delete_user(store: Store, email_key: str) -> bool:
    """Delete the user of email_key and every session of theirs; whether there was one."""
    with store.writes.begin() as session:
        user_id = session.scalar(select(AdminUser.id).where(AdminUser.email_key == email_key))
        if user_id is None:
            return False
        session.execute(delete(AdminSession).where(AdminSession.user_id == user_id))
        session.execute(delete(AdminUser).where(AdminUser.id == user_id))
    return True


def list_users(store: Store) -> list[AdminUser]:
    """Every admin user, by address."""
    with store.sessions() as session:
        return list(session.scalars(select(AdminUser).order_by(AdminUser.email_key)))


def find_user(store: Store, email_key: str) -> AdminUser | None:
    with store.sessions() as session:
        return session.scalar(select(AdminUser).where(AdminUser.email_key == email_key))


def set_password_hash(store: Store, user_id: int, password_hash: str) -> None:
    with store.writes.begin() as session:
        session.execute(update(AdminUser).where(AdminUser.id == user_id)
                        .values(password_hash=password_hash))


def signed_in(store: Store, user_id: int, token_hash: str, csrf: str, now: datetime,
              expires_at: datetime, *, replaces: str | None = None) -> None:
    """Record a sign-in: the user's last login, a new session, and the end of the session
    the browser held before (replaces: its token hash), in one transaction; sessions that
    have ended go at the same time."""
    with store.writes.begin() as session:
        session.execute(update(AdminUser).where(AdminUser.id == user_id)
                        .values(last_login_at=now))
        if replaces is not None:
            session.execute(delete(AdminSession).where(AdminSession.token_hash == replaces))
        session.execute(delete(AdminSession).where(AdminSession.expires_at <= now))
        session.add(AdminSession(token_hash=token_hash, user_id=user_id, csrf=csrf,
                                 created_at=now, expires_at=expires_at))


def session_row(store: Store, token_hash: str, now: datetime) -> SessionRow | None:
    """The live session of token_hash with its user, or None (none, or it has ended)."""
    with store.sessions() as session:
        row = session.execute(
            select(AdminSession.user_id, AdminUser.email, AdminSession.csrf,
                   AdminSession.created_at, AdminSession.expires_at)
            .join(AdminUser, AdminUser.id == AdminSession.user_id)
            .where(AdminSession.token_hash == token_hash, AdminSession.expires_at > now)
        ).first()
    return None if row is None else SessionRow(*row)


def delete_session(store: Store, token_hash: str) -> bool:
    """End one session; whether it was there."""
    with store.writes.begin() as session:
        return rowcount(session.execute(
            delete(AdminSession).where(AdminSession.token_hash == token_hash))) > 0


def _like(text: str) -> str:
    """A LIKE pattern that finds text anywhere, its own % and _ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_subscribers(store: Store, text: str, status: SubscriberStatus | None,
                       limit: int, offset: int = 0) -> SubscriberPage:
    """Subscribers whose address or name holds text (any case), of one status or all,
    removed ones never; by id, `limit` from `offset`, with the number that match."""
    where = [Subscriber.status != SubscriberStatus.REMOVED]
    if status is not None:
        where.append(Subscriber.status == status)
    if text:
        pattern = _like(text.lower())
        where.append(or_(Subscriber.email_key.like(pattern, escape="\\"),
                         func.lower(Subscriber.name).like(pattern, escape="\\")))
    with store.sessions() as session:
        total = session.scalar(select(func.count()).select_from(Subscriber).where(*where))
        rows = list(session.scalars(select(Subscriber).where(*where).order_by(Subscriber.id)
                                    .limit(limit).offset(offset)))
    return SubscriberPage(rows, int(total or 0))


def subscriber_email(store: Store, subscriber_id: int) -> str | None:
    """The address of subscriber subscriber_id, unless there is none or they were erased."""
    with store.sessions() as session:
        return session.scalar(select(Subscriber.email).where(
            Subscriber.id == subscriber_id, Subscriber.status != SubscriberStatus.REMOVED))


def edition_numbers(store: Store) -> dict[int, int]:
    """Edition id → its number."""
    with store.sessions() as session:
        return {i: n for i, n in session.execute(select(Edition.id, Edition.number))}
