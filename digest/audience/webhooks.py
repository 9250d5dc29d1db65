"""Provider webhooks, verified and read: Amazon SES (through SNS), Postmark, Mailgun and
SendGrid each become `Finding`s, the shape every bounce source hands to the bounce desk.

Nothing here knows Flask or SQL: a function takes the request's raw body (and the
headers that carry a signature) and either returns the findings or raises
`WebhookRejected` (not verified: a forged, altered, stale or replayed request) or
`WebhookMalformed` (verified, or not verifiable, but not the shape the provider sends).
`WebhookUnavailable` means the request could not be checked now (the signing
certificate could not be fetched): the provider should try again later.

How each provider is verified, and how a replay is stopped:

- SES through SNS: the RSA signature (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA)
  over the canonical string SNS documents, with the certificate from SigningCertURL,
  which must be https on an SNS host (sns.<region>.amazonaws.com[.cn]) before anything
  is fetched; the certificate is fetched once and kept. The TopicArn must be one of
  `webhooks.ses_topic_arns`: a signature only proves the message went through SNS, and
  anybody can publish to a topic of their own. A Timestamp older than max_age_seconds
  is a replay. Within that window the same notification carries the same feedbackId,
  which is its report_id: recorded once.
- Postmark signs nothing; its documented way is HTTP basic auth credentials in the
  webhook URL, checked in constant time. A replay carries the same bounce ID, the
  report_id: recorded once.
- Mailgun: HMAC-SHA256 of timestamp + token with the webhook signing key; the timestamp
  must be within max_age_seconds. The signature covers the timestamp and the token, not
  the event, so a token is accepted once while its timestamp is fresh: `SeenTokens`
  claims it in this process and, with `shared`, in the store, where every process of the
  site (and the same one after a restart) sees the claim; a copy carrying another event
  is refused like an unaltered one. The report_id (the event's id, the token when there
  is none) records an event delivered twice once. Not stopped: a copy that arrives
  before Mailgun's own request, within max_age_seconds (`digest check` warns).
- SendGrid's signed event webhook: ECDSA P-256 with SHA-256 over the timestamp header
  followed by the raw body, with the verification key SendGrid shows; a timestamp older
  than max_age_seconds is a replay, and each event's sg_event_id is its report_id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ..config import WebhooksSettings
from ..store.models import BounceKind
from ..text import clean_label
from .findings import Finding

__all__ = [
    "SeenTokens",
    "SnsClient",
    "WebhookMalformed",
    "WebhookRejected",
    "WebhookUnavailable",
    "load_sendgrid_key",
    "mailgun_token",
    "postmark_configured",
    "read_ses_notification",
    "ses_topics",
    "verify_and_read_mailgun",
    "verify_and_read_postmark",
    "verify_and_read_sendgrid",
    "verify_and_read_ses",
]

SES_SOURCE = "webhook:ses"
POSTMARK_SOURCE = "webhook:postmark"
MAILGUN_SOURCE = "webhook:mailgun"
SENDGRID_SOURCE = "webhook:sendgrid"

_REASON_CHARS = 300
_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
# The fields SNS signs, in the order it signs them (SNS: "Verifying the signatures of
# Amazon SNS messages"); Subject only when the message has one.
_SNS_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp",
                                 "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp",
                                "Token", "TopicArn", "Type"),
}
_SNS_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_CACHED_CERTIFICATES = 16


class WebhookRejected(ValueError):
    """The request is not verified (forged, altered, stale, replayed, wrong credentials,
    a certificate from elsewhere). The message is one line, with nothing personal."""


class WebhookMalformed(ValueError):
    """The request is not the shape the provider sends (not JSON, a field missing)."""


class WebhookUnavailable(RuntimeError):
    """The request cannot be checked now (its signing certificate could not be fetched);
    the provider should deliver it again later."""


# -- shared ------------------------------------------------------------------------------

def _json(body: bytes) -> Any:
    """The body's JSON. A "\\ud800" escape (a lone surrogate: valid JSON, but no text)
    is malformed too: every string of a verified request must encode as UTF-8."""
    try:
        value = json.loads(body)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError, json.JSONDecodeError, RecursionError):
        raise WebhookMalformed("the body is not JSON (or not text)") from None
    return value


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WebhookMalformed(f"{what} is not a JSON object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise WebhookMalformed(f"{what} is not a JSON list")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise WebhookMalformed(f"{what} is missing or not a string")
    return value


def _optional_text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _address(value: Any) -> str:
    """The lower-cased address in value ("" when there is none)."""
    _name, address = parseaddr(_optional_text(value))
    address = address.strip().lower()
    return address if "@" in address else ""


def _reason(*texts: Any) -> str:
    """The first non-empty text, on one line, cut to what a Finding keeps."""
    for text in texts:
        cleaned = clean_label(_optional_text(text))
        if cleaned:
            return cleaned[:_REASON_CHARS]
    return ""


def _status(*texts: Any) -> str | None:
    """The first enhanced status code (e.g. 5.1.1) among texts."""
    for text in texts:
        found = _STATUS.search(_optional_text(text))
        if found:
            return found.group(1)
    return None


def _iso_time(value: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(_optional_text(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _epoch_time(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _fresh(when: float, max_age: int, now: float) -> None:
    """Raise WebhookRejected when `when` (seconds since the epoch) is more than max_age
    seconds from now, in the past (a replay) or the future."""
    current = now
    if abs(current - when) > max_age:
        raise WebhookRejected(f"the timestamp is more than {max_age} seconds from now "
                              f"(a replay, or a clock that is wrong)")


def _epoch_seconds(value: Any, what: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise WebhookRejected(f"{what} is not a timestamp") from None
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise WebhookRejected(f"{what} is not a timestamp")
    return seconds


def _finding(source: str, recipient: str, kind: BounceKind, status: str | None,
             reason: str, report_id: str, occurred_at: datetime | None) -> Finding:
    return Finding(source=source, recipient=recipient, kind=kind, status=status,
                   reason=reason, report_id=report_id, occurred_at=occurred_at)


# -- Amazon SES through SNS --------------------------------------------------------------

def ses_topics(settings: WebhooksSettings) -> frozenset[str]:
    """The topic ARNs accepted (ses_topic_arns, separated by commas or spaces). Empty:
    the SES webhook is off, since any AWS account can sign through SNS."""
    return frozenset(arn for arn in re.split(r"[\s,]+", settings.ses_topic_arns) if arn)


def _sns_url(value: Any, what: str) -> httpx.URL:
    """value as an https URL on an SNS host, or WebhookRejected (nothing is fetched)."""
    try:
        url = httpx.URL(_optional_text(value))
    except (httpx.InvalidURL, TypeError, ValueError):
        raise WebhookRejected(f"{what} is not a URL") from None
    if url.scheme != "https" or url.port not in (None, 443) or url.userinfo or \
            not _SNS_HOST.fullmatch(url.host):
        raise WebhookRejected(f"{what} is not https on an Amazon SNS host "
                              f"(sns.<region>.amazonaws.com)")
    return url


class SnsClient:
    """Fetches SNS signing certificates (each once, then kept) and confirms
    subscriptions, through `transport` (httpx's own when None)."""

    def __init__(self, transport: httpx.BaseTransport | None = None,
                 timeout: float = 10.0) -> None:
        self._client = httpx.Client(transport=transport, timeout=timeout,
                                    follow_redirects=False)
        self._keys: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def signing_key(self, value: Any, now: float) -> rsa.RSAPublicKey:
        """The RSA key of the certificate at SigningCertURL `value`."""
        url = _sns_url(value, "SigningCertURL")
        if not url.path.endswith(".pem"):
            raise WebhookRejected("SigningCertURL does not name a .pem certificate")
        key = str(url)
        with self._lock:
            if key in self._keys:
                self._keys.move_to_end(key)
                return self._keys[key]
        public = self._fetch_key(url, now)
        with self._lock:
            self._keys[key] = public
            while len(self._keys) > _CACHED_CERTIFICATES:
                self._keys.popitem(last=False)
        return public

    def _get(self, url: httpx.URL, failure: str) -> httpx.Response:
        """GET url from an SNS host; WebhookUnavailable ("failure (why)") unless a 200, so
        that SNS tries again later."""
        try:
            response = self._client.get(url)
        except httpx.HTTPError as exc:
            raise WebhookUnavailable(f"{failure} ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise WebhookUnavailable(f"{failure} (HTTP {response.status_code})")
        return response

    def _fetch_key(self, url: httpx.URL, now: float) -> rsa.RSAPublicKey:
        response = self._get(url, "the SNS signing certificate could not be fetched")
        try:
            certificate = x509.load_pem_x509_certificate(response.content)
        except ValueError:
            raise WebhookRejected("SigningCertURL does not serve a PEM certificate") from None
        moment = datetime.fromtimestamp(now, UTC)
        if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
            raise WebhookRejected("the SNS signing certificate is expired or not yet valid")
        public = certificate.public_key()
        if not isinstance(public, rsa.RSAPublicKey):
            raise WebhookRejected("the SNS signing certificate does not hold an RSA key")
        return public

    def confirm(self, value: Any) -> None:
        """GET the SubscribeURL `value` (an SNS host only), as SNS asks."""
        self._get(_sns_url(value, "SubscribeURL"), "the subscription could not be confirmed")


def _sns_canonical(message: Mapping[str, Any]) -> bytes:
    kind = _text(message.get("Type"), "Type")
    fields = _SNS_SIGNED.get(kind)
    if fields is None:
        raise WebhookMalformed(f"the SNS message type {kind[:40]!r} is not one SNS sends")
    parts: list[str] = []
    for name in fields:
        if name == "Subject" and name not in message:
            continue
        parts += [name, _text(message.get(name), name)]
    return "".join(f"{part}\n" for part in parts).encode("utf-8")


def _verify_sns(message: Mapping[str, Any], sns: SnsClient, now: float) -> None:
    algorithm = _SNS_HASHES.get(_optional_text(message.get("SignatureVersion")))
    if algorithm is None:
        raise WebhookRejected("SignatureVersion is not 1 or 2")
    canonical = _sns_canonical(message)
    try:
        signature = base64.b64decode(_text(message.get("Signature"), "Signature"),
                                     validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected("the signature is not base64") from None
    key = sns.signing_key(message.get("SigningCertURL"), now)
    try:
        key.verify(signature, canonical, padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise WebhookRejected("the SNS signature does not verify") from None


def verify_and_read_ses(body: bytes, settings: WebhooksSettings, sns: SnsClient, *,
                        now: float) -> list[Finding]:
    """The findings of one SNS POST carrying an SES notification. A verified
    SubscriptionConfirmation is confirmed (its SubscribeURL fetched) and yields nothing,
    as do UnsubscribeConfirmation and notifications that report no bounce or complaint."""
    message = _obj(_json(body), "the SNS message")
    topics = ses_topics(settings)
    if _optional_text(message.get("TopicArn")) not in topics:
        raise WebhookRejected("the TopicArn is not one of [webhooks] ses_topic_arns")
    timestamp = _iso_time(message.get("Timestamp"))
    if timestamp is None:
        raise WebhookRejected("the SNS Timestamp is missing or not a time")
    _fresh(timestamp.timestamp(), settings.max_age_seconds, now)
    _verify_sns(message, sns, now)
    kind = message["Type"]
    if kind == "SubscriptionConfirmation":
        sns.confirm(message.get("SubscribeURL"))
        return []
    if kind != "Notification":
        return []
    notification = _obj(_json(_text(message.get("Message"), "Message").encode("utf-8")),
                        "the SES notification")
    return _ses_findings(notification, _text(message.get("MessageId"), "MessageId"))


def read_ses_notification(notification: Mapping[str, Any], message_id: str) -> list[Finding]:
    """The findings of one SES notification (bounce or complaint), however it came: an
    SNS POST here, or the same JSON that SNS mails to an email subscription (read by
    `bouncemail`). Raises WebhookRejected for a notification of the wrong shape."""
    return _ses_findings(notification, message_id)


def _ses_findings(notification: Mapping[str, Any], message_id: str) -> list[Finding]:
    kind = _optional_text(notification.get("notificationType")
                          or notification.get("eventType"))
    if kind == "Bounce":
        return _ses_bounces(_obj(notification.get("bounce"), "bounce"), message_id)
    if kind == "Complaint":
        return _ses_complaints(_obj(notification.get("complaint"), "complaint"), message_id)
    return []


def _ses_bounces(bounce: Mapping[str, Any], message_id: str) -> list[Finding]:
    bounce_type = _optional_text(bounce.get("bounceType"))
    kind = BounceKind.HARD if bounce_type == "Permanent" else BounceKind.SOFT
    report = f"ses:{_optional_text(bounce.get('feedbackId')) or message_id}"
    when = _iso_time(bounce.get("timestamp"))
    found = []
    for item in _list(bounce.get("bouncedRecipients"), "bouncedRecipients"):
        recipient = _obj(item, "a bounced recipient")
        address = _address(recipient.get("emailAddress"))
        if not address:
            continue
        diagnostic = recipient.get("diagnosticCode")
        status = _optional_text(recipient.get("status")) or _status(diagnostic)
        reason = _reason(diagnostic, f"{bounce_type} {_optional_text(bounce.get('bounceSubType'))}")
        found.append(_finding(SES_SOURCE, address, kind, status or None, reason, report, when))
    return found


def _ses_complaints(complaint: Mapping[str, Any], message_id: str) -> list[Finding]:
    feedback = _optional_text(complaint.get("complaintFeedbackType"))
    if feedback == "not-spam":
        return []
    report = f"ses:{_optional_text(complaint.get('feedbackId')) or message_id}"
    when = _iso_time(complaint.get("timestamp"))
    reason = _reason(f"complaint ({feedback})" if feedback else "complaint")
    found = []
    for item in _list(complaint.get("complainedRecipients"), "complainedRecipients"):
        address = _address(_obj(item, "a complained recipient").get("emailAddress"))
        if address:
            found.append(_finding(SES_SOURCE, address, BounceKind.COMPLAINT, None, reason,
                                  report, when))
    return found


# -- Postmark ----------------------------------------------------------------------------

# Postmark's bounce types (its Bounce API reference) that say something about the address.
# The others (Unsubscribe, Subscribe, AddressChange, OpenRelayTest, VirusNotification,
# ChallengeVerification, ManuallyDeactivated, Unconfirmed, SMTPApiError, InboundError,
# TemplateRenderingFailed, DMARCPolicy: about our own domain, Unknown) record nothing.
_POSTMARK_KINDS = {
    "HardBounce": BounceKind.HARD,
    "BadEmailAddress": BounceKind.HARD,
    "SoftBounce": BounceKind.SOFT,
    "Transient": BounceKind.SOFT,
    "DnsError": BounceKind.SOFT,
    "SpamNotification": BounceKind.SOFT,   # delivered but blocked or filed as spam
    "Blocked": BounceKind.SOFT,            # an ISP block: content or reputation
    "AutoResponder": BounceKind.AUTO_REPLY,
    "SpamComplaint": BounceKind.COMPLAINT,
}


def postmark_configured(settings: WebhooksSettings) -> bool:
    return bool(settings.postmark_username and settings.postmark_password)


def _basic_credentials(authorization: str | None) -> tuple[bytes, bytes]:
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not value:
        raise WebhookRejected("no HTTP basic auth credentials")
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected("the basic auth credentials are not base64") from None
    username, colon, password = decoded.partition(b":")
    if not colon:
        raise WebhookRejected("the basic auth credentials have no password")
    return username, password


def verify_and_read_postmark(body: bytes, authorization: str | None,
                             settings: WebhooksSettings) -> list[Finding]:
    """The findings of one Postmark bounce or spam complaint webhook, once the
    Authorization header carries the configured credentials."""
    username, password = _basic_credentials(authorization)
    # Both compared every time, in constant time: no hint which one was wrong.
    right_user = hmac.compare_digest(username, settings.postmark_username.encode("utf-8"))
    right_password = hmac.compare_digest(password,
                                         settings.postmark_password.encode("utf-8"))
    if not (right_user & right_password):
        raise WebhookRejected("wrong basic auth credentials")
    record = _obj(_json(body), "the Postmark record")
    record_type = _optional_text(record.get("RecordType"))
    if record_type not in ("Bounce", "SpamComplaint"):
        return []
    kind = _POSTMARK_KINDS.get(_optional_text(record.get("Type")))
    if record_type == "SpamComplaint":
        kind = BounceKind.COMPLAINT
    address = _address(record.get("Email"))
    if kind is None or not address:
        return []
    bounce_id = record.get("ID")
    if isinstance(bounce_id, bool) or not isinstance(bounce_id, int | str) or bounce_id == "":
        raise WebhookMalformed("the Postmark record has no ID")
    details = record.get("Details")
    return [_finding(POSTMARK_SOURCE, address, kind, _status(details),
                     _reason(details, record.get("Description"), record.get("Name")),
                     f"postmark:{bounce_id}", _iso_time(record.get("BouncedAt")))]


# -- Mailgun -----------------------------------------------------------------------------

class SeenTokens:
    """Mailgun tokens accepted while their timestamp is fresh. A token is claimed when
    its request verifies (two copies at once: one wins) and forgotten again when
    recording its findings failed, so that the provider's next try is accepted. With
    `shared` (claim, forget), the claim is also made where every process of the site
    sees it (the store), so a copy sent to another process, or after a restart, is a
    replay too: Mailgun's signature does not cover the event, only the token."""

    def __init__(self, max_age: int,
                 shared: tuple[Callable[[str, float], bool], Callable[[str], None]] | None
                 = None) -> None:
        self.max_age = max_age
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()
        self._shared = shared

    def claim(self, token: str, timestamp: float, now: float) -> bool:
        """True when token was not seen before (it is now); False for a replay."""
        current = now
        with self._lock:
            for old in [t for t, until in self._until.items() if until < current]:
                del self._until[old]
            if token in self._until:
                return False
            if self._shared is not None and not self._shared[0](token, timestamp +
                                                                 self.max_age):
                return False
            self._until[token] = timestamp + self.max_age
            return True

    def forget(self, token: str) -> None:
        with self._lock:
            self._until.pop(token, None)
            if self._shared is not None:
                self._shared[1](token)


def mailgun_token(body: bytes) -> str | None:
    """The signature token of a Mailgun body (for SeenTokens.forget)."""
    try:
        return str(json.loads(body)["signature"]["token"])
    except (ValueError, KeyError, TypeError):
        return None


def _verify_mailgun(signature: Mapping[str, Any], key: str, max_age: int,
                    seen: SeenTokens | None, now: float) -> str:
    timestamp = _optional_text(signature.get("timestamp"))
    token = _optional_text(signature.get("token"))
    given = _optional_text(signature.get("signature"))
    if not (timestamp and token and given):
        raise WebhookRejected("the Mailgun signature block is incomplete")
    expected = hmac.new(key.encode("utf-8"), (timestamp + token).encode("utf-8"),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode("ascii"), given.lower().encode("utf-8")):
        raise WebhookRejected("the Mailgun signature does not verify")
    when = _epoch_seconds(timestamp, "the Mailgun timestamp")
    _fresh(when, max_age, now)
    if seen is not None and not seen.claim(token, when, now):
        raise WebhookRejected("the Mailgun token was used before (a replay)")
    return token


def _mailgun_kind(event: Mapping[str, Any]) -> BounceKind | None:
    name = _optional_text(event.get("event"))
    if name == "complained":
        return BounceKind.COMPLAINT
    if name != "failed":
        return None
    if _optional_text(event.get("severity")) != "permanent":
        return BounceKind.SOFT
    reason = _optional_text(event.get("reason"))
    if reason == "suppress-complaint":
        return BounceKind.COMPLAINT
    if reason == "suppress-unsubscribe":
        return None
    # "old": retries ran out (a full mailbox for days, a server down): soft.
    return BounceKind.SOFT if reason == "old" else BounceKind.HARD


def verify_and_read_mailgun(body: bytes, settings: WebhooksSettings, *,
                            seen: SeenTokens | None = None,
                            now: float) -> list[Finding]:
    """The findings of one Mailgun webhook (JSON: signature and event-data). The token is
    claimed in `seen` (one seen before is a replay); the caller forgets it again when
    the findings could not be recorded."""
    payload = _obj(_json(body), "the Mailgun payload")
    signature = payload.get("signature")
    if not isinstance(signature, dict):
        raise WebhookRejected("the Mailgun signature block is missing")
    token = _verify_mailgun(signature, settings.mailgun_signing_key,
                            settings.max_age_seconds, seen, now)
    event = _obj(payload.get("event-data"), "event-data")
    kind = _mailgun_kind(event)
    address = _address(event.get("recipient"))
    if kind is None or not address:
        return []
    status_block = event.get("delivery-status")
    delivery = status_block if isinstance(status_block, dict) else {}
    texts = (delivery.get("description"), delivery.get("message"))
    event_id = _optional_text(event.get("id")) or token
    return [_finding(MAILGUN_SOURCE, address, kind, _status(*texts),
                     _reason(*texts, event.get("reason"), event.get("event")),
                     f"mailgun:{event_id}", _epoch_time(event.get("timestamp")))]


# -- SendGrid ----------------------------------------------------------------------------

def load_sendgrid_key(text: str) -> ec.EllipticCurvePublicKey:
    """The P-256 verification key SendGrid shows (base64 DER SubjectPublicKeyInfo), or the
    same as PEM. Raises ValueError naming what is wrong."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode("ascii"))
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise ValueError("it is not a public key (base64 DER or PEM)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or \
            not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("it is not an ECDSA P-256 public key")
    return key


# SendGrid's dropped reasons that say something about the address.
_SENDGRID_DROPPED = {
    "bounced address": BounceKind.HARD,
    "invalid": BounceKind.HARD,
    "spam reporting address": BounceKind.COMPLAINT,
}


def _sendgrid_kind(event: Mapping[str, Any]) -> BounceKind | None:
    """What one SendGrid event says. A deferral is not a bounce: SendGrid keeps trying
    and sends a bounce (or a drop) when it gives up, and that is what is recorded."""
    name = _optional_text(event.get("event"))
    if name == "bounce":
        return BounceKind.SOFT if event.get("type") == "blocked" else BounceKind.HARD
    if name == "dropped":
        return _SENDGRID_DROPPED.get(_optional_text(event.get("reason")).strip().lower())
    if name == "spamreport":
        return BounceKind.COMPLAINT
    return None


def _verify_sendgrid(body: bytes, signature: str | None, timestamp: str | None,
                     key: ec.EllipticCurvePublicKey, max_age: int,
                     now: float) -> None:
    if not signature or not timestamp:
        raise WebhookRejected("the SendGrid signature or timestamp header is missing")
    try:
        der = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected("the SendGrid signature is not base64") from None
    try:
        key.verify(der, timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise WebhookRejected("the SendGrid signature does not verify") from None
    _fresh(_epoch_seconds(timestamp, "the SendGrid timestamp"), max_age, now)


def verify_and_read_sendgrid(body: bytes, signature: str | None, timestamp: str | None,
                             key: ec.EllipticCurvePublicKey, settings: WebhooksSettings,
                             *, now: float) -> list[Finding]:
    """The findings of one signed SendGrid event webhook POST (a JSON list of events);
    `signature` and `timestamp` are the X-Twilio-Email-Event-Webhook-* headers."""
    _verify_sendgrid(body, signature, timestamp, key, settings.max_age_seconds, now)
    return list(_sendgrid_findings(_list(_json(body), "the SendGrid events")))


def _sendgrid_findings(events: Iterable[Any]) -> Iterable[Finding]:
    for item in events:
        event = _obj(item, "a SendGrid event")
        kind = _sendgrid_kind(event)
        address = _address(event.get("email"))
        if kind is None or not address:
            continue
        event_id = _optional_text(event.get("sg_event_id"))
        if not event_id:
            raise WebhookMalformed("a SendGrid event has no sg_event_id")
        status = _optional_text(event.get("status")) or _status(event.get("reason"))
        yield _finding(SENDGRID_SOURCE, address, kind, status or None,
                       _reason(event.get("reason"), event.get("response"),
                               event.get("event")),
                       f"sendgrid:{event_id}", _epoch_time(event.get("timestamp")))
