"""DKIM signatures (RFC 6376) at OpenSSL speed: RSA-SHA256 and Ed25519-SHA256 (RFC 8463).

The signer never sees a whole message. A message template hands it the canonical forms
of the signed header fields and the body hash; the template computes the body hash
incrementally (`BodyHasher`): the canonical form of every fixed segment of a variant's
body is made once, the hash state after the first one is copied per message, and only
the short personal segments are canonicalised per message. Keys are loaded and checked
once, with `cryptography`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from ..config import Settings
from ..errors import ConfigError

__all__ = [
    "SIGNED_HEADERS",
    "BodyHasher",
    "DkimSigner",
    "canonical_body",
    "canonical_header",
    "dkim_signer",
]

# The header fields signed, when present: those a receiver shows or acts on.
SIGNED_HEADERS = ("from", "to", "subject", "date", "message-id", "reply-to", "list-id",
                  "list-unsubscribe", "list-unsubscribe-post", "mime-version",
                  "content-type")
_WSP = re.compile(rb"[ \t]+")
_WSP_EOL = re.compile(rb"[ \t]+\r\n")
_UNFOLD = re.compile(rb"\r\n(?=[ \t])")


def canonical_header(field: bytes, relaxed: bool) -> bytes:
    """One header field (name, colon, value, its folding and final CRLF) in canonical
    form, ending with CRLF. Relaxed: name lower-cased, unfolded, runs of white space one
    space, none at the ends of the value."""
    if not relaxed:
        return field
    name, _, value = field.partition(b":")
    value = _WSP.sub(b" ", _UNFOLD.sub(b"", value.rstrip(b"\r\n"))).strip(b" ")
    return name.strip().lower() + b":" + value + b"\r\n"


def canonical_body(segment: bytes, relaxed: bool) -> bytes:
    """A run of whole body lines (CRLF-terminated) in canonical form. Simple: as it is;
    relaxed: runs of white space one space, none at line ends. (Trailing empty lines are
    the caller's: a digest's body never ends with one.)"""
    if not relaxed:
        return segment
    return _WSP_EOL.sub(b"\r\n", _WSP.sub(b" ", segment))


class BodyHasher:
    """The body hash of a variant's messages: fixed segments canonicalised once, the
    hash state after the first one kept, per message only the personal segments done."""

    def __init__(self, first: bytes, relaxed: bool) -> None:
        self.relaxed = relaxed
        self._start = hashlib.sha256(canonical_body(first, relaxed))
        self._fixed: dict[int, bytes] = {}

    def fixed(self, key: int, segment: bytes) -> None:
        """Remember the canonical form of fixed segment `key`."""
        self._fixed[key] = canonical_body(segment, self.relaxed)

    def digest(self, parts: Sequence[int | bytes]) -> bytes:
        """The hash of the body: the first segment, then each part (a fixed segment's key,
        or a personal segment's bytes) in order."""
        h = self._start.copy()
        fixed, relaxed = self._fixed, self.relaxed
        for part in parts:
            h.update(fixed[part] if isinstance(part, int) else canonical_body(part, relaxed))
        return h.digest()


@dataclass(frozen=True)
class _Key:
    algorithm: bytes          # b"rsa-sha256" or b"ed25519-sha256"
    selector: bytes
    private: Any


def _load(path_text: str, settings: Settings, kind: type, what: str) -> Any:
    path = settings.resolve_path(path_text)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"[dkim] {what} {path}: {exc.strerror}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"[dkim] {what} {path} is not an unencrypted PEM private key "
                          f"({exc}); make one with: openssl genpkey ...") from None
    if not isinstance(key, kind):
        raise ConfigError(f"[dkim] {what} {path} holds a {type(key).__name__.lstrip('_')}, "
                          f"not the {'RSA' if kind is rsa.RSAPrivateKey else 'Ed25519'} "
                          f"key this setting takes")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 1024:
        raise ConfigError(f"[dkim] {what} {path}: a {key.key_size}-bit RSA key is refused "
                          f"by receivers; use 2048 bits")
    return key


class DkimSigner:
    """Makes DKIM-Signature header fields: one per configured key (Ed25519 first, then
    RSA: receivers that know only RSA skip the other)."""

    def __init__(self, settings: Settings) -> None:
        k = settings.dkim
        self.domain = k.domain.encode()
        header_c, _, body_c = k.canonicalization.partition("/")
        self.relaxed_headers = header_c == "relaxed"
        self.relaxed_body = body_c == "relaxed"
        self.keys: list[_Key] = []
        if k.ed25519:
            self.keys.append(_Key(b"ed25519-sha256", k.ed25519_selector.encode(),
                                  _load(k.ed25519_private_key, settings,
                                        ed25519.Ed25519PrivateKey, "ed25519_private_key")))
        if k.rsa:
            self.keys.append(_Key(b"rsa-sha256", k.selector.encode(),
                                  _load(k.private_key, settings, rsa.RSAPrivateKey,
                                        "private_key")))

    def header(self, names: Sequence[bytes], canonical: Sequence[bytes],
               body_hash: bytes, now: int | None = None) -> bytes:
        """The DKIM-Signature fields to put on top of a message whose signed header fields
        are `names` (lower-case) with these canonical forms, and whose body hash this is."""
        stamp = int(time.time()) if now is None else now
        signed = b"".join(canonical)
        out = []
        for key in self.keys:
            head = (b"DKIM-Signature: v=1; a=" + key.algorithm + b"; c="
                    + (b"relaxed" if self.relaxed_headers else b"simple") + b"/"
                    + (b"relaxed" if self.relaxed_body else b"simple")
                    + b"; d=" + self.domain + b"; s=" + key.selector
                    + b";\r\n t=" + str(stamp).encode() + b"; h=" + b":".join(names)
                    + b";\r\n bh=" + base64.b64encode(body_hash) + b";\r\n b=")
            data = signed + canonical_header(head + b"\r\n", self.relaxed_headers)[:-2]
            out.append(head + _fold(self._sign(key, data)) + b"\r\n")
        return b"".join(out)

    @staticmethod
    def _sign(key: _Key, data: bytes) -> bytes:
        if key.algorithm == b"rsa-sha256":
            signature = key.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        else:
            signature = key.private.sign(hashlib.sha256(data).digest())
        return base64.b64encode(signature)


def _fold(value: bytes, width: int = 72) -> bytes:
    """A base64 value folded into lines of `width` (folding white space is ignored in b=)."""
    return b"\r\n ".join(value[i:i + width] for i in range(0, len(value), width))


def dkim_signer(settings: Settings) -> DkimSigner | None:
    """The signer [dkim] configures, or None to send unsigned."""
    return DkimSigner(settings) if settings.dkim.enabled else None
