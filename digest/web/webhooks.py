"""Provider webhooks: POST /webhooks/ses, /webhooks/postmark, /webhooks/mailgun and
/webhooks/sendgrid. Each request is verified by digest.audience.webhooks; what it reports
goes to the bounce desk (digest.audience.bounces), which records each event once.

A provider that is not configured in [webhooks] is a 404. Verified: 200, whatever the
request reported. Not verified: 403 (401 for Postmark's basic auth, with a challenge) and
nothing changes; not the provider's shape: 400; a certificate that cannot be fetched:
503, so that SNS delivers it again. Every refusal is one log line naming the provider
and the reason, never an address. The views are exempt from CSRF (providers post without
cookies or forms) and read at most MAX_BODY bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Blueprint, Response, g, request
from flask_wtf.csrf import CSRFProtect

from ..audience.bounces import BounceDesk
from ..audience.findings import Finding, Reading
from ..audience.webhooks import (
    SeenTokens,
    SnsClient,
    WebhookMalformed,
    WebhookRejected,
    WebhookUnavailable,
    load_sendgrid_key,
    mailgun_token,
    postmark_configured,
    ses_topics,
    verify_and_read_mailgun,
    verify_and_read_postmark,
    verify_and_read_sendgrid,
    verify_and_read_ses,
)
from ..config import Settings
from ..errors import ConfigError
from ..store.ratelimits import clear_hits, count_hit
from .site import site

__all__ = ["MAX_BODY", "webhook_pages"]

log = logging.getLogger("digest.web.webhooks")

# SNS messages are at most 256 KiB; SendGrid posts its events in batches.
MAX_BODY = 1024 * 1024


class _Hooks:
    """The views' state beyond the request (the SNS client with its certificates, the
    Mailgun tokens seen, the SendGrid key), built once per app."""

    def __init__(self, settings: Settings, sns_transport: httpx.BaseTransport | None) -> None:
        self.sns = SnsClient(sns_transport)
        self.seen = SeenTokens(settings.webhooks.max_age_seconds,
                               shared=(_claim_in_store, _forget_in_store))
        self.sendgrid_key = _sendgrid_key(settings)
        self.readers: dict[str, Callable[[bytes], list[Finding]]] = {
            "ses": self.ses, "postmark": self.postmark, "mailgun": self.mailgun,
            "sendgrid": self.sendgrid,
        }

    def receive(self, provider: str) -> Response:
        read = self.readers.get(provider)
        if read is None or not self.configured(provider):
            return _reply(404, "not found")
        request.max_content_length = MAX_BODY
        body = request.get_data(cache=False)
        g.claimed_token = None
        try:
            return _handle(provider, read, body)
        except Exception:
            # Not recorded (the store failed): the provider's next try, with the same
            # token, must not be refused as a replay. Only a token this request claimed:
            # a request that failed before (never verified) frees nobody's token.
            if g.claimed_token is not None:
                self.seen.forget(g.claimed_token)
            raise

    def configured(self, provider: str) -> bool:
        hooks = site().settings.webhooks
        if provider == "ses":
            return bool(ses_topics(hooks))
        if provider == "postmark":
            return postmark_configured(hooks)
        if provider == "mailgun":
            return bool(hooks.mailgun_signing_key)
        return self.sendgrid_key is not None

    def ses(self, body: bytes) -> list[Finding]:
        return verify_and_read_ses(body, site().settings.webhooks, self.sns,
                                   now=site().store.clock.timestamp())

    def postmark(self, body: bytes) -> list[Finding]:
        return verify_and_read_postmark(body, request.headers.get("Authorization"),
                                        site().settings.webhooks)

    def mailgun(self, body: bytes) -> list[Finding]:
        findings = verify_and_read_mailgun(body, site().settings.webhooks, seen=self.seen,
                                           now=site().store.clock.timestamp())
        g.claimed_token = mailgun_token(body)      # verified and claimed by this request
        return findings

    def sendgrid(self, body: bytes) -> list[Finding]:
        assert self.sendgrid_key is not None  # configured() checked it
        return verify_and_read_sendgrid(
            body, request.headers.get("X-Twilio-Email-Event-Webhook-Signature"),
            request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp"),
            self.sendgrid_key, site().settings.webhooks, now=site().store.clock.timestamp())


def _sendgrid_key(settings: Settings) -> ec.EllipticCurvePublicKey | None:
    text = settings.webhooks.sendgrid_public_key
    if not text.strip():
        return None
    try:
        return load_sendgrid_key(text)
    except ValueError as exc:
        raise ConfigError(f"[webhooks] sendgrid_public_key: {exc}; copy the verification "
                          f"key from SendGrid (Settings, Mail Settings, Signed Event "
                          f"Webhook)") from None


def _token_key(token: str) -> str:
    return f"webhook-token:mailgun:{token}"


def _claim_in_store(token: str, until: float) -> bool:
    """Claim a Mailgun token in the store, for every process of the site: the first
    claim of it there (until it expires) is the only one that counts."""
    now = site().store.clock.timestamp()
    return count_hit(site().store, _token_key(token), max(1, int(until - now) + 1), 1,
                     now) == 1


def _forget_in_store(token: str) -> None:
    clear_hits(site().store, _token_key(token))


def webhook_pages(settings: Settings, csrf: CSRFProtect,
                  sns_transport: httpx.BaseTransport | None = None) -> Blueprint:
    """The webhooks blueprint; SNS certificates and subscription confirmations are
    fetched through sns_transport (httpx's own when None). Raises ConfigError when
    [webhooks] sendgrid_public_key is set but is not a P-256 public key."""
    state = _Hooks(settings, sns_transport)
    hooks = Blueprint("webhooks", __name__, url_prefix="/webhooks")
    hooks.add_url_rule("/<provider>", "receive", state.receive, methods=["POST"])
    csrf.exempt(hooks)
    return hooks


def _handle(provider: str, read: Callable[[bytes], list[Finding]], body: bytes) -> Response:
    try:
        findings = read(body)
    except WebhookRejected as exc:
        log.warning("webhook %s refused: %s", provider, exc)
        if provider == "postmark":
            response = _reply(401, "unauthorized")
            response.headers["WWW-Authenticate"] = 'Basic realm="digest webhooks"'
            return response
        return _reply(403, "forbidden")
    except WebhookMalformed as exc:
        log.warning("webhook %s malformed: %s", provider, exc)
        return _reply(400, "bad request")
    except WebhookUnavailable as exc:
        log.warning("webhook %s not checked: %s", provider, exc)
        return _reply(503, "try again later")
    if findings:
        here = site()
        BounceDesk(here.store, here.settings).apply(Reading(f"webhook:{provider}", findings))
    return _reply(200, "ok")


def _reply(status: int, text: str) -> Response:
    return Response(f"{text}\n", status=status, mimetype="text/plain")
