"""Signed tokens for the links in every message (unsubscribe, preferences, confirm).

A token is ``<payload>.<signature>``, both URL-safe base64. The payload names the
purpose, the subscriber, the subscriber's token version (bump it to revoke every token
issued so far) and an optional expiry. Each purpose has its own key, derived from the
secret, so a token for one purpose is never valid for another.

The secret is DIGEST_SECRET_KEY, or the random file `digest init` writes beside the store
(``create_secret_file``); never anything derived from public facts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BadToken", "Signer", "TokenClaims", "create_secret_file", "read_token"]


class BadToken(ValueError):
    """The token is malformed, forged, for another purpose, or expired."""


@dataclass(frozen=True)
class TokenClaims:
    purpose: str
    subscriber_id: int
    version: int
    expires: int | None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _purpose_key(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, b"digest-token:" + purpose.encode(), hashlib.sha256).digest()


class Signer:
    """Makes tokens for one purpose; keeps the derived key, so each token costs one HMAC."""

    def __init__(self, secret: bytes, purpose: str) -> None:
        self.purpose = purpose
        self._key = _purpose_key(secret, purpose)

    def make(self, subscriber_id: int, version: int, expires: int | None = None) -> str:
        payload = f"{self.purpose}:{subscriber_id}:{version}:{expires or ''}".encode()
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()[:18]
        return f"{_b64(payload)}.{_b64(mac)}"


def read_token(secret: bytes, purpose: str, token: str, now: float | None = None) -> TokenClaims:
    """The claims of a valid token; BadToken otherwise (compared in constant time)."""
    try:
        payload_b64, mac_b64 = token.split(".")
        payload, mac = _unb64(payload_b64), _unb64(mac_b64)
    except (ValueError, TypeError):
        raise BadToken("malformed token") from None
    want = hmac.new(_purpose_key(secret, purpose), payload, hashlib.sha256).digest()[:18]
    if not hmac.compare_digest(want, mac):
        raise BadToken("invalid signature")
    try:
        kind, sid, version, expires = payload.decode().split(":")
        claims = TokenClaims(kind, int(sid), int(version), int(expires) if expires else None)
    except ValueError:
        raise BadToken("malformed token") from None
    if claims.purpose != purpose:
        raise BadToken("token for another purpose")
    if claims.expires is not None and (now or time.time()) > claims.expires:
        raise BadToken("expired")
    return claims


def create_secret_file(path: Path) -> bool:
    """Write a new random secret (384 bits, URL-safe text) to path, readable by its owner
    only (mode 0600). An existing file is never touched: replacing the secret would break
    every link already sent. Returns True when it wrote one."""
    try:
        # O_EXCL: two `digest init`s at once cannot both write (and one overwrite the other).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(secrets.token_urlsafe(48) + "\n")
    return True
