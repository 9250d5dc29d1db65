"""Time as an input.

Whatever decides by the time of day (which articles an edition takes, when a slot is
due, when a token expires, when a deferred message is retried) asks a Clock it was
handed, never the wall clock behind its caller's back. The edges make one: the CLI (one
per command), the web app, the scheduler and the workers use SystemClock; tests and
replays hand in a FixedClock and move it themselves.

Durations measured inside one call (a socket timeout, a deadline for a loop) are not
decisions about the date and use time.monotonic() where they are.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

__all__ = ["Clock", "FixedClock", "SystemClock", "system_clock"]


class Clock:
    """What time it is now, as an aware UTC datetime."""

    def now(self) -> datetime:
        raise NotImplementedError

    def timestamp(self) -> float:
        """now() as seconds since the epoch (for signed tokens and rate windows)."""
        return self.now().timestamp()


class SystemClock(Clock):
    """The machine's clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def __repr__(self) -> str:
        return "SystemClock()"


class FixedClock(Clock):
    """A clock that stands still until it is set or advanced (safe across threads)."""

    def __init__(self, at: datetime) -> None:
        self._lock = threading.Lock()
        self._at = self._checked(at)

    @staticmethod
    def _checked(at: datetime) -> datetime:
        if at.tzinfo is None:
            raise ValueError(f"a clock's time must be aware (UTC): {at!r}")
        return at.astimezone(UTC)

    def now(self) -> datetime:
        with self._lock:
            return self._at

    def set(self, at: datetime) -> None:
        with self._lock:
            self._at = self._checked(at)

    def advance(self, delta: timedelta | None = None, **parts: float) -> datetime:
        """Move forward by delta (or timedelta(**parts)); returns the new time."""
        step = delta if delta is not None else timedelta(**parts)
        with self._lock:
            self._at += step
            return self._at

    def __repr__(self) -> str:
        return f"FixedClock({self._at.isoformat()})"


_SYSTEM = SystemClock()


def system_clock() -> SystemClock:
    """The one SystemClock of the process (it holds no state)."""
    return _SYSTEM
