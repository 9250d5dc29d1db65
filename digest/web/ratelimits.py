"""Rate-limit counters in the store's own database: a `limits` storage backend for
Flask-Limiter, so every thread and every process serving the web pages of one store
counts into the same buckets (its built-in backends are per-process memory, or servers we
do not run: Redis, Memcached, MongoDB).

Fixed windows only (Flask-Limiter's default strategy): one row per key holds the hits
and when the window ends. Each hit is one atomic upsert, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from typing import Any

from limits.storage import Storage

from ..store import ratelimits as counters
from ..store.db import Store

__all__ = ["SCHEME", "StoreLimitStorage"]

# Flask-Limiter's storage_uri for this backend; the store goes in storage_options.
SCHEME = "digest-store"


class StoreLimitStorage(Storage):
    """Fixed-window counters in the `rate_limits` table of a digest store."""

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False,
                 store: Store | None = None, **options: Any) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        if store is None:
            raise ValueError("StoreLimitStorage needs storage_options={'store': store}")
        self.store = store

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return counters.STORE_ERRORS

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Count `amount` hits on key (a new window of `expiry` seconds when the last one
        ended) and return the hits in the current window."""
        return counters.count_hit(self.store, key, expiry, amount, self.store.clock.timestamp())

    def get(self, key: str) -> int:
        return counters.current_hits(self.store, key, self.store.clock.timestamp())

    def get_expiry(self, key: str) -> float:
        now = self.store.clock.timestamp()
        end = counters.window_end(self.store, key, now)
        return end if end is not None else now

    def check(self) -> bool:
        return counters.table_ready(self.store)

    def reset(self) -> int | None:
        return counters.reset_hits(self.store)

    def clear(self, key: str) -> None:
        counters.clear_hits(self.store, key)
