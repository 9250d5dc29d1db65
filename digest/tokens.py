"""Signed tokens for the links in every message (unsubscribe, preferences, confirm, and
the tracked "read more" links of click counts).

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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BadToken", "ClickClaims", "ClickSigner", "Signer", "TokenClaims", "Verp",
           "VerpClaims", "client_hash", "create_secret_file", "erased_key", "erased_keys",
           "read_token"]


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


def read_token(secret: bytes, purpose: str, token: str, now: float) -> TokenClaims:
    """The claims of a valid token at now (seconds since the epoch); BadToken otherwise
    (compared in constant time)."""
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
    if claims.expires is not None and now > claims.expires:
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


@dataclass(frozen=True)
class ClickClaims:
    number: int        # the edition's number
    article_id: int


class ClickSigner:
    """The tokens of tracked "read more" links, ``{base_url}/r/{token}``. A token names an
    edition (by number) and an article, nothing else: every reader of the edition gets
    the very same link. ``<number>.<article>.<16 characters of HMAC>``, ids in base 36,
    URL-safe and short. The key is derived for this purpose alone, so no other token is
    ever a valid click token, nor the other way round.
"""

    _TOKEN = re.compile(r"([0-9a-z]{1,13})\.([0-9a-z]{1,13})\.([A-Za-z0-9_-]{16})")

    def __init__(self, secret: bytes) -> None:
        self._key = _purpose_key(secret, "click-link")

    def _mac(self, number: int, article_id: int) -> str:
        mac = hmac.new(self._key, f"{number}:{article_id}".encode(), hashlib.sha256)
        return _b64(mac.digest()[:12])

    def make(self, number: int, article_id: int) -> str:
        if number < 1 or article_id < 1:
            raise ValueError("edition numbers and article ids start at 1")
        return f"{_base36(number)}.{_base36(article_id)}.{self._mac(number, article_id)}"

    def link(self, base_url: str, number: int, article_id: int) -> str:
        """The tracked link of an article in edition `number` on the site at base_url."""
        return f"{base_url.rstrip('/')}/r/{self.make(number, article_id)}"

    def read(self, token: str) -> ClickClaims:
        """The claims of a token this signer made; BadToken for anything else: forged,
        altered (a changed id, a changed letter, leading zeros), cut or padded."""
        found = self._TOKEN.fullmatch(token)
        if found is None:
            raise BadToken("malformed token")
        number, article_id = int(found[1], 36), int(found[2], 36)
        # One spelling per link: "01" for "1" is an altered token, not the same one.
        if (_base36(number), _base36(article_id)) != (found[1], found[2]) or not (
                number and article_id):
            raise BadToken("malformed token")
        if not hmac.compare_digest(self._mac(number, article_id), found[3]):
            raise BadToken("invalid signature")
        return ClickClaims(number, article_id)


def client_hash(key: bytes, network: str) -> str:
    """What a click keeps of the network it came from while its edition's counting is
    open: an HMAC-SHA256 (64 hex digits) keyed by the edition's own random key (deleted,
    with these hashes, when counting closes); never the address, nor anything the
    long-lived secret could tell again."""
    return hmac.new(key, network.encode(), hashlib.sha256).hexdigest()


def erased_key(secret: bytes, address: str) -> str:
    """What the suppression list keeps of an erased address: a keyed hash (HMAC-SHA256
    with a key derived from the secret), so nobody holding the database alone can test
    addresses against it."""
    return erased_keys(secret, [address])[0]


def erased_keys(secret: bytes, addresses: Iterable[str]) -> list[str]:
    """erased_key of each address, the key derived once for them all."""
    key = _purpose_key(secret, "erased")
    return ["hmac:" + hmac.new(key, address.strip().lower().encode(), hashlib.sha256)
            .hexdigest() for address in addresses]


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
