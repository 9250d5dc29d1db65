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
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BadToken", "Signer", "TokenClaims", "Verp", "VerpClaims", "create_secret_file",
           "erased_key", "read_token"]


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


@dataclass(frozen=True)
class VerpClaims:
    subscriber_id: int
    edition_id: int


_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _B36[r] + out
        if not n:
            return out


class Verp:
    """VERP return paths: ``bounces+{token}@example.org`` with a short token naming the
    subscriber and the edition, signed so that nobody can bounce someone else off the
    list. The token is lower-case letters, digits and hyphens (some servers lower-case
    local parts): ``<subscriber>-<edition>-<13 letters of HMAC>``, ids in base 36."""

    def __init__(self, secret: bytes, pattern: str) -> None:
        self.pattern = pattern
        self._key = _purpose_key(secret, "verp")
        prefix, _, suffix = pattern.partition("{token}")
        self._match = re.compile(re.escape(prefix) + r"([0-9a-z]{1,13})-([0-9a-z]{1,13})-"
                                 r"([a-z2-7]{13})" + re.escape(suffix) + r"$", re.IGNORECASE)

    def _mac(self, subscriber_id: int, edition_id: int) -> str:
        mac = hmac.new(self._key, f"{subscriber_id}:{edition_id}".encode(), hashlib.sha256)
        return base64.b32encode(mac.digest()[:8]).decode().lower()[:13]

    def address(self, subscriber_id: int, edition_id: int) -> str:
        token = (f"{_base36(subscriber_id)}-{_base36(edition_id)}-"
                 f"{self._mac(subscriber_id, edition_id)}")
        return self.pattern.replace("{token}", token)

    def read(self, address: str) -> VerpClaims | None:
        """The claims of a VERP address of ours with a valid signature; None otherwise."""
        found = self._match.search(address.strip().strip("<>"))
        if found is None:
            return None
        sid, eid = int(found[1], 36), int(found[2], 36)
        if not hmac.compare_digest(self._mac(sid, eid), found[3].lower()):
            return None
        return VerpClaims(sid, eid)


def erased_key(secret: bytes, address: str) -> str:
    """What the suppression list keeps of an erased address: a keyed hash (HMAC-SHA256
    with a key derived from the secret), so nobody holding the database alone can test
    addresses against it."""
    mac = hmac.new(_purpose_key(secret, "erased"), address.strip().lower().encode(),
                   hashlib.sha256)
    return "hmac:" + mac.hexdigest()


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
