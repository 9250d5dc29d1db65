"""Provider webhooks (SES through SNS, Postmark, Mailgun, SendGrid): requests signed the
way each provider signs them, with keys and certificates made here, against the payloads
the providers publish (tests/data/webhooks/, see tests/data/SOURCES.md).

There is no internet here: Amazon's certificate host cannot be reached, so the SNS client
is given an httpx.MockTransport that stands in for sns.<region>.amazonaws.com and serves
the certificate this test made. Everything else is real: the app, the store (an SQLite
file), and for one request each a waitress server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import DATA, HTTP_TIMEOUT, Digest, need, sql
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from flask import Flask
from flask.testing import FlaskClient

from digest.audience.webhooks import (
    SeenTokens,
    SnsClient,
    WebhookMalformed,
    WebhookRejected,
    load_sendgrid_key,
    verify_and_read_mailgun,
    verify_and_read_postmark,
    verify_and_read_sendgrid,
    verify_and_read_ses,
)
from digest.config import Settings, WebhooksSettings, load_settings
from digest.errors import ConfigError
from digest.mail.loopback import free_port
from digest.store.db import Store
from digest.store.models import BounceKind
from digest.web.app import WebServer, create_app

HOOKS = DATA / "webhooks"
SECRET = "a-test-secret-that-is-long-enough-0123456789"
TOPIC = "arn:aws:sns:us-west-2:123456789012:MyTopic"      # the topic of AWS's examples
MAILGUN_KEY = "key-made-for-this-test-0123456789abcdef"
POSTMARK = ("postmark-hooks", "a password made for this test")


def sample(name: str) -> Any:
    return json.loads(need(HOOKS / name).read_text())


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


# --- SNS: a certificate made here, served where Amazon's would be -------------------------

@dataclass
class FakeSns:
    """Amazon's SNS host as far as the SNS client sees it: serves the certificate made
    here at every .pem path and answers subscription confirmations; records requests."""

    key: rsa.RSAPrivateKey
    pem: bytes
    requests: list[httpx.Request] = field(default_factory=list)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith(".pem"):
            return httpx.Response(200, content=self.pem)
        if request.url.params.get("Action") == "ConfirmSubscription":
            return httpx.Response(200, text="<ConfirmSubscriptionResponse/>")
        return httpx.Response(404)


def make_certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(days=1))
                   .not_valid_after(now + timedelta(days=30))
                   .sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def fake_sns(rsa_key: rsa.RSAPrivateKey) -> FakeSns:
    return FakeSns(rsa_key, make_certificate(rsa_key))


def sign_sns(message: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "1") -> None:
    """Sign message as SNS does: the canonical name/value lines, SHA1withRSA (version 1)
    or SHA256withRSA (version 2)."""
    names = (["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
             if message["Type"] == "Notification" else
             ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
              "Type"])
    canonical = "".join(f"{name}\n{message[name]}\n" for name in names if name in message)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(canonical.encode(), padding.PKCS1v15(), algorithm)
    message["SignatureVersion"] = version
    message["Signature"] = base64.b64encode(signature).decode()


def sns_notification(ses_sample: str, key: rsa.RSAPrivateKey, *, version: str = "1",
                     at: float | None = None) -> dict[str, Any]:
    """AWS's example SNS notification carrying AWS's example SES notification, sent now
    (or at `at`) and signed with key."""
    message = sample("sns-notification.json")
    message["Message"] = need(HOOKS / ses_sample).read_text()
    message["Timestamp"] = iso(time.time() if at is None else at)
    sign_sns(message, key, version)
    return message


def body(message: Any) -> bytes:
    return json.dumps(message).encode()


SETTINGS = WebhooksSettings(ses_topic_arns=TOPIC, postmark_username=POSTMARK[0],
                            postmark_password=POSTMARK[1], mailgun_signing_key=MAILGUN_KEY)


# --- SES through SNS: the verification itself -------------------------------------------

@pytest.mark.parametrize("version", ["1", "2"])
def test_ses_bounce_from_the_aws_docs_is_read_once_verified(fake_sns: FakeSns,
                                                            version: str) -> None:
    sns = SnsClient(fake_sns.transport)
    message = sns_notification("ses-bounce-with-dsn.json", fake_sns.key, version=version)
    [finding] = verify_and_read_ses(body(message), SETTINGS, sns, now=time.time())
    assert (finding.source, finding.recipient, finding.kind, finding.status) == \
        ("webhook:ses", "jane@example.com", BounceKind.HARD, "5.1.1")
    assert finding.reason == "smtp; 550 5.1.1 <jane@example.com>... User"
    assert finding.report_id == "ses:00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa068a-000000"
    assert finding.occurred_at == datetime(2016, 1, 27, 14, 59, 38, 237000, UTC)
    # The certificate came from the SigningCertURL of AWS's example, over https.
    [fetch] = fake_sns.requests
    assert str(fetch.url) == ("https://sns.us-west-2.amazonaws.com/"
                              "SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem")


def test_ses_complaint_transient_bounce_and_delivery(fake_sns: FakeSns) -> None:
    sns = SnsClient(fake_sns.transport)
    [complaint] = verify_and_read_ses(
        body(sns_notification("ses-complaint-with-feedback.json", fake_sns.key)), SETTINGS, sns,
        now=time.time())
    assert (complaint.recipient, complaint.kind) == ("richard@example.com",
                                                     BounceKind.COMPLAINT)
    assert verify_and_read_ses(body(sns_notification("ses-delivery.json", fake_sns.key)),
                               SETTINGS, sns, now=time.time()) == []
    for bounce_type, kind in (("Transient", BounceKind.SOFT),
                              ("Undetermined", BounceKind.SOFT)):
        message = sample("sns-notification.json")
        ses = sample("ses-bounce-with-dsn.json")
        ses["bounce"]["bounceType"] = bounce_type
        message.update(Message=json.dumps(ses), Timestamp=iso(time.time()))
        sign_sns(message, fake_sns.key)
        assert [f.kind for f in verify_and_read_ses(body(message), SETTINGS, sns,
                                                    now=time.time())] == [kind]
    # A complaint whose feedback type is not-spam is no complaint.
    not_spam = sample("ses-complaint-with-feedback.json")
    not_spam["complaint"]["complaintFeedbackType"] = "not-spam"
    message = sample("sns-notification.json")
    message.update(Message=json.dumps(not_spam), Timestamp=iso(time.time()))
    sign_sns(message, fake_sns.key)
    assert verify_and_read_ses(body(message), SETTINGS, sns, now=time.time()) == []
    # One certificate fetch for all of them.
    assert len(fake_sns.requests) == 1


def test_forged_altered_stale_or_foreign_sns_messages_are_rejected(fake_sns: FakeSns) -> None:
    sns = SnsClient(fake_sns.transport)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = sns_notification("ses-bounce-with-dsn.json", other_key)
    altered = sns_notification("ses-bounce-with-dsn.json", fake_sns.key)
    altered["Message"] = altered["Message"].replace("jane@example.com", "mary@example.com")
    stale = sns_notification("ses-bounce-with-dsn.json", fake_sns.key, at=time.time() - 301)
    foreign = sns_notification("ses-bounce-with-dsn.json", fake_sns.key)
    foreign["TopicArn"] = "arn:aws:sns:us-west-2:999999999999:SomeoneElsesTopic"
    sign_sns(foreign, fake_sns.key)
    unknown_version = sns_notification("ses-bounce-with-dsn.json", fake_sns.key)
    unknown_version["SignatureVersion"] = "3"
    cases = {"forged": forged, "altered": altered, "stale": stale, "foreign": foreign,
             "unknown version": unknown_version}
    for what, message in cases.items():
        with pytest.raises(WebhookRejected):
            verify_and_read_ses(body(message), SETTINGS, sns, now=time.time())
            pytest.fail(f"the {what} message was accepted")


@pytest.mark.parametrize("url", [
    "http://sns.us-west-2.amazonaws.com/SimpleNotificationService-x.pem",
    "https://sns.us-west-2.amazonaws.com.attacker.example/SimpleNotificationService-x.pem",
    "https://attacker.example/sns.us-west-2.amazonaws.com/x.pem",
    "https://sns.attacker.example/x.pem",
    "https://s3.amazonaws.com/bucket/cert.pem",
    "https://user@sns.us-west-2.amazonaws.com/x.pem",
    "https://sns.us-west-2.amazonaws.com:8443/x.pem",
    "https://sns.us-west-2.amazonaws.com/not-a-certificate.txt",
    "not a url",
])
def test_a_certificate_off_an_sns_host_is_rejected_before_any_fetch(
        fake_sns: FakeSns, url: str) -> None:
    message = sns_notification("ses-bounce-with-dsn.json", fake_sns.key)
    message["SigningCertURL"] = url
    with pytest.raises(WebhookRejected, match="SigningCertURL"):
        verify_and_read_ses(body(message), SETTINGS, SnsClient(fake_sns.transport), now=time.time())
    assert fake_sns.requests == []


def test_china_regions_are_sns_hosts_too(fake_sns: FakeSns) -> None:
    message = sns_notification("ses-bounce-with-dsn.json", fake_sns.key)
    message["SigningCertURL"] = ("https://sns.cn-north-1.amazonaws.com.cn/"
                                 "SimpleNotificationService-x.pem")
    assert len(verify_and_read_ses(body(message), SETTINGS, SnsClient(fake_sns.transport),
                                   now=time.time())) == 1


def test_a_subscription_confirmation_gets_its_subscribe_url(fake_sns: FakeSns) -> None:
    message = sample("sns-subscription-confirmation.json")
    message["Timestamp"] = iso(time.time())
    sign_sns(message, fake_sns.key)
    assert verify_and_read_ses(body(message), SETTINGS, SnsClient(fake_sns.transport),
                               now=time.time()) == []
    certificate, confirmation = fake_sns.requests
    assert confirmation.method == "GET"
    assert str(confirmation.url) == message["SubscribeURL"]
    # Signed, but the SubscribeURL is not on an SNS host: not fetched.
    fake_sns.requests.clear()
    message["SubscribeURL"] = "https://attacker.example/?Action=ConfirmSubscription"
    sign_sns(message, fake_sns.key)
    with pytest.raises(WebhookRejected, match="SubscribeURL"):
        verify_and_read_ses(body(message), SETTINGS, SnsClient(fake_sns.transport), now=time.time())
    assert [r.url.host for r in fake_sns.requests] == ["sns.us-west-2.amazonaws.com"]


def test_not_json_is_malformed_and_an_empty_topic_list_accepts_nothing(
        fake_sns: FakeSns) -> None:
    sns = SnsClient(fake_sns.transport)
    with pytest.raises(WebhookMalformed):
        verify_and_read_ses(b"<xml/>", SETTINGS, sns, now=time.time())
    message = sns_notification("ses-bounce-with-dsn.json", fake_sns.key)
    with pytest.raises(WebhookRejected, match="TopicArn"):
        verify_and_read_ses(body(message), WebhooksSettings(), sns, now=time.time())


# --- Postmark ---------------------------------------------------------------------------

def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def test_postmark_bounce_and_spam_complaint_with_the_right_credentials() -> None:
    auth = basic(*POSTMARK)
    [bounce] = verify_and_read_postmark(body(sample("postmark-bounce.json")), auth, SETTINGS)
    assert (bounce.recipient, bounce.kind, bounce.status, bounce.report_id) == \
        ("bounce@example.com", BounceKind.HARD, "5.1.1", "postmark:901542550")
    assert bounce.occurred_at == datetime(2016, 4, 27, 20, 28, 50, 396393, UTC)
    [complaint] = verify_and_read_postmark(body(sample("postmark-spam-complaint.json")), auth,
                                           SETTINGS)
    assert (complaint.recipient, complaint.kind) == ("spam@example.com", BounceKind.COMPLAINT)


@pytest.mark.parametrize(("bounce_type", "kind"), [
    ("HardBounce", BounceKind.HARD), ("BadEmailAddress", BounceKind.HARD),
    ("SoftBounce", BounceKind.SOFT), ("Transient", BounceKind.SOFT),
    ("DnsError", BounceKind.SOFT), ("SpamNotification", BounceKind.SOFT),
    ("Blocked", BounceKind.SOFT), ("AutoResponder", BounceKind.AUTO_REPLY),
    ("Unsubscribe", None), ("ChallengeVerification", None), ("ManuallyDeactivated", None),
    ("DMARCPolicy", None), ("Unknown", None),
])
def test_postmark_bounce_types(bounce_type: str, kind: BounceKind | None) -> None:
    record = sample("postmark-bounce.json") | {"Type": bounce_type}
    found = verify_and_read_postmark(body(record), basic(*POSTMARK), SETTINGS)
    assert [f.kind for f in found] == ([kind] if kind else [])


@pytest.mark.parametrize("authorization", [
    None, "", basic(POSTMARK[0], "wrong"), basic("wrong", POSTMARK[1]),
    "Bearer " + POSTMARK[1], "Basic not-base64!", "Basic " + base64.b64encode(b"no-colon").decode(),
])
def test_postmark_without_the_right_credentials_is_rejected(authorization: str | None) -> None:
    with pytest.raises(WebhookRejected):
        verify_and_read_postmark(body(sample("postmark-bounce.json")), authorization, SETTINGS)


# --- Mailgun ----------------------------------------------------------------------------

def mailgun_payload(event_sample: str, *, key: str = MAILGUN_KEY, at: float | None = None,
                    token: str | None = None) -> dict[str, Any]:
    """Mailgun's body: the signature block (HMAC-SHA256 of timestamp + token) and the
    event."""
    timestamp = str(int(time.time() if at is None else at))
    token = token or hashlib.sha256(f"{event_sample}{time.time_ns()}".encode()).hexdigest()[:50]
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256)
    return {"signature": {"timestamp": timestamp, "token": token,
                          "signature": signature.hexdigest()},
            "event-data": sample(event_sample)}


def test_mailgun_failed_and_complained_events() -> None:
    [hard] = verify_and_read_mailgun(body(mailgun_payload("mailgun-failed-permanent.json")),
                                     SETTINGS, now=time.time())
    assert (hard.recipient, hard.kind, hard.status) == ("invalid@example.com",
                                                        BounceKind.HARD, "5.1.1")
    assert hard.occurred_at == datetime(2018, 8, 12, 21, 47, 2, 389832, UTC)
    [soft] = verify_and_read_mailgun(body(mailgun_payload("mailgun-failed-temporary.json")),
                                     SETTINGS, now=time.time())
    assert (soft.recipient, soft.kind, soft.reason) == ("undeliverable@nomx.example.com",
                                                        BounceKind.SOFT,
                                                        "No MX for nomx.example.com")
    payload = mailgun_payload("mailgun-complained.json")
    [complaint] = verify_and_read_mailgun(body(payload), SETTINGS, now=time.time())
    assert (complaint.kind, complaint.report_id) == (BounceKind.COMPLAINT,
                                                     "mailgun:ncV2XwymRUKbPek_MIM-Gw")


def test_mailgun_forged_stale_and_replayed_tokens_are_rejected() -> None:
    seen = SeenTokens(SETTINGS.max_age_seconds)
    forged = mailgun_payload("mailgun-failed-permanent.json", key="not the key")
    stale = mailgun_payload("mailgun-failed-permanent.json", at=time.time() - 301)
    future = mailgun_payload("mailgun-failed-permanent.json", at=time.time() + 301)
    for payload in (forged, stale, future):
        with pytest.raises(WebhookRejected):
            verify_and_read_mailgun(body(payload), SETTINGS, seen=seen, now=time.time())
    good = mailgun_payload("mailgun-failed-permanent.json")
    assert len(verify_and_read_mailgun(body(good), SETTINGS, seen=seen, now=time.time())) == 1
    # The same token again, as it was or with another event: a replay.
    altered = good | {"event-data": sample("mailgun-complained.json")}
    for payload in (good, altered):
        with pytest.raises(WebhookRejected, match="replay"):
            verify_and_read_mailgun(body(payload), SETTINGS, seen=seen, now=time.time())
    # Forgotten (its findings could not be recorded): the provider's next try is taken.
    seen.forget(good["signature"]["token"])
    assert len(verify_and_read_mailgun(body(good), SETTINGS, seen=seen, now=time.time())) == 1


# --- SendGrid ---------------------------------------------------------------------------

def test_sendgrids_own_signed_example_verifies() -> None:
    """SendGrid's published test vector (sendgrid-python's event webhook test): their
    key, their signature, their timestamp and body."""
    example = sample("sendgrid-signed-example.json")
    payload = (json.dumps(example["events"], sort_keys=True, separators=(",", ":"))
               + "\r\n").encode()
    key = load_sendgrid_key(example["public_key"])
    then = float(example["timestamp"])
    [dropped] = verify_and_read_sendgrid(payload, example["signature"], example["timestamp"],
                                         key, SETTINGS, now=then)
    assert (dropped.recipient, dropped.kind, dropped.reason) == ("hello@world.com",
                                                                 BounceKind.HARD,
                                                                 "Bounced Address")
    # The same request today is a replay; with a byte changed it does not verify.
    with pytest.raises(WebhookRejected, match="seconds from now"):
        verify_and_read_sendgrid(payload, example["signature"], example["timestamp"], key,
                                 SETTINGS, now=time.time())
    with pytest.raises(WebhookRejected, match="does not verify"):
        verify_and_read_sendgrid(payload.replace(b"hello", b"hallo"), example["signature"],
                                 example["timestamp"], key, SETTINGS, now=then)


@dataclass
class SendGridSigner:
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def public(self) -> str:
        """The key as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo."""
        der = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode()

    def headers(self, payload: bytes, at: float | None = None) -> dict[str, str]:
        timestamp = str(int(time.time() if at is None else at))
        signature = self.key.sign(timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
        return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}


def test_sendgrid_events_map_to_kinds() -> None:
    signer = SendGridSigner()
    events = sample("sendgrid-events.json") + [
        {"event": "bounce", "type": "blocked", "email": "Blocked@Example.com",
         "sg_event_id": "blocked-1", "reason": "550 5.7.1 blocked by policy",
         "timestamp": 1461095250},
        {"event": "spamreport", "email": "spam@example.com", "sg_event_id": "spam-1",
         "timestamp": 1461095250},
        {"event": "dropped", "reason": "Spam Reporting Address", "email": "fbl@example.com",
         "sg_event_id": "drop-spam-1", "timestamp": 1461095250},
    ]
    payload = body(events)
    headers = signer.headers(payload)
    found = verify_and_read_sendgrid(payload, headers["X-Twilio-Email-Event-Webhook-Signature"],
                                     headers["X-Twilio-Email-Event-Webhook-Timestamp"],
                                     load_sendgrid_key(signer.public), SETTINGS, now=time.time())
    # The deferral, the unsubscribed drop and the open record nothing.
    assert [(f.recipient, f.kind, f.status) for f in found] == [
        ("noreply@example.com", BounceKind.HARD, "5.1.1"),
        ("invalid@invalid", BounceKind.HARD, None),
        ("blocked@example.com", BounceKind.SOFT, "5.7.1"),
        ("spam@example.com", BounceKind.COMPLAINT, None),
        ("fbl@example.com", BounceKind.COMPLAINT, None),
    ]
    assert found[0].report_id == "sendgrid:lC0Rc-FuQmKbnxCWxX1jRQ"


def test_sendgrid_key_as_pem_and_bad_keys() -> None:
    signer = SendGridSigner()
    pem = signer.key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    assert load_sendgrid_key(pem.decode()).public_numbers() == \
        load_sendgrid_key(signer.public).public_numbers()
    rsa_der = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key() \
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for bad in ("not a key", base64.b64encode(rsa_der).decode()):
        with pytest.raises(ValueError, match="key"):
            load_sendgrid_key(bad)


# --- through the app, against a real store ----------------------------------------------

@dataclass
class Hooks:
    """The app with every provider configured, its store and its Flask test client."""

    digest: Digest
    settings: Settings
    app: Flask
    client: FlaskClient
    sns: FakeSns
    sendgrid: SendGridSigner

    def status(self, email: str) -> str:
        [(status,)] = sql(self.digest.folder,
                          f"SELECT status FROM subscribers WHERE email = '{email}'")
        return str(status)

    def suppressed(self) -> list[tuple[str, str]]:
        return [(str(a), str(b)) for a, b in sql(
            self.digest.folder, "SELECT email_key, reason FROM suppressions ORDER BY 1")]

    def events(self) -> int:
        [(count,)] = sql(self.digest.folder, "SELECT count(*) FROM bounce_events")
        return int(count)


READERS = ["jane@example.com", "richard@example.com", "bounce@example.com",
           "spam@example.com", "invalid@example.com", "recipient@example.com",
           "noreply@example.com"]


def hooks_env(signer: SendGridSigner) -> dict[str, str]:
    return {"DIGEST_SECRET_KEY": SECRET, "DIGEST_WEBHOOKS__SES_TOPIC_ARNS": TOPIC,
            "DIGEST_WEBHOOKS__POSTMARK_USERNAME": POSTMARK[0],
            "DIGEST_WEBHOOKS__POSTMARK_PASSWORD": POSTMARK[1],
            "DIGEST_WEBHOOKS__MAILGUN_SIGNING_KEY": MAILGUN_KEY,
            "DIGEST_WEBHOOKS__SENDGRID_PUBLIC_KEY": signer.public}


@pytest.fixture
def hooks(digest: Digest, fake_sns: FakeSns) -> Iterator[Hooks]:
    for email in READERS:
        digest.ok("subscribers", "add", email)
    signer = SendGridSigner()
    settings = load_settings(digest.folder / "digest.toml", environ=hooks_env(signer))
    store = Store.from_settings(settings)
    app = create_app(settings, store, sns_transport=fake_sns.transport)
    try:
        yield Hooks(digest, settings, app, app.test_client(), fake_sns, signer)
    finally:
        store.close()


def test_an_ses_hard_bounce_bounces_and_a_complaint_unsubscribes(hooks: Hooks) -> None:
    bounce = body(sns_notification("ses-bounce-with-dsn.json", hooks.sns.key))
    assert hooks.client.post("/webhooks/ses", data=bounce).status_code == 200
    assert hooks.status("jane@example.com") == "bounced"
    complaint = body(sns_notification("ses-complaint-with-feedback.json", hooks.sns.key))
    assert hooks.client.post("/webhooks/ses", data=complaint).status_code == 200
    assert hooks.status("richard@example.com") == "unsubscribed"
    assert hooks.suppressed() == [("jane@example.com", "hard-bounced"),
                                  ("richard@example.com", "complained")]
    # SNS delivering the same notification again records nothing more.
    assert hooks.client.post("/webhooks/ses", data=bounce).status_code == 200
    assert hooks.events() == 2


def test_refused_ses_requests_change_nothing(hooks: Hooks,
                                             caplog: pytest.LogCaptureFixture) -> None:
    forged = sns_notification("ses-bounce-with-dsn.json",
                              rsa.generate_private_key(public_exponent=65537, key_size=2048))
    altered = sns_notification("ses-complaint-with-feedback.json", hooks.sns.key)
    altered["Message"] = altered["Message"].replace("richard@", "jane@")
    stale = sns_notification("ses-bounce-with-dsn.json", hooks.sns.key, at=time.time() - 600)
    wrong_host = sns_notification("ses-bounce-with-dsn.json", hooks.sns.key)
    wrong_host["SigningCertURL"] = "https://certs.attacker.example/SimpleNotificationService.pem"
    for message in (forged, altered, stale, wrong_host):
        assert hooks.client.post("/webhooks/ses", data=body(message)).status_code == 403
    assert hooks.client.post("/webhooks/ses", data=b"{not json").status_code == 400
    assert {hooks.status(e) for e in READERS} == {"active"}
    assert hooks.suppressed() == [] and hooks.events() == 0
    refusals = [r.getMessage() for r in caplog.records if r.name == "digest.web.webhooks"]
    assert len(refusals) == 5
    assert not any("@" in line for line in refusals)
    assert "certs.attacker.example" not in {r.url.host for r in hooks.sns.requests}


def test_postmark_through_the_app(hooks: Hooks) -> None:
    bounce, complaint = (body(sample(name)) for name in ("postmark-bounce.json",
                                                         "postmark-spam-complaint.json"))
    refused = hooks.client.post("/webhooks/postmark", data=bounce,
                                headers={"Authorization": basic(POSTMARK[0], "guess")})
    assert refused.status_code == 401 and "Basic" in refused.headers["WWW-Authenticate"]
    assert hooks.client.post("/webhooks/postmark", data=bounce).status_code == 401
    assert hooks.status("bounce@example.com") == "active"
    auth = {"Authorization": basic(*POSTMARK)}
    assert hooks.client.post("/webhooks/postmark", data=bounce, headers=auth).status_code == 200
    assert hooks.client.post("/webhooks/postmark", data=complaint,
                             headers=auth).status_code == 200
    assert (hooks.status("bounce@example.com"), hooks.status("spam@example.com")) == \
        ("bounced", "unsubscribed")
    # A replay (Postmark retrying, or someone who saw the request): the same bounce ID.
    assert hooks.client.post("/webhooks/postmark", data=bounce, headers=auth).status_code == 200
    assert hooks.events() == 2


def test_mailgun_through_the_app(hooks: Hooks) -> None:
    good = mailgun_payload("mailgun-failed-permanent.json")
    forged = mailgun_payload("mailgun-failed-permanent.json", key="guessed")
    stale = mailgun_payload("mailgun-failed-permanent.json", at=time.time() - 600)
    for payload in (forged, stale):
        assert hooks.client.post("/webhooks/mailgun", data=body(payload)).status_code == 403
    assert hooks.status("invalid@example.com") == "active"
    assert hooks.client.post("/webhooks/mailgun", data=body(good)).status_code == 200
    assert hooks.status("invalid@example.com") == "bounced"
    # The same token again, with another event in the body: refused.
    altered = good | {"event-data": sample("mailgun-complained.json")}
    for payload in (good, altered):
        assert hooks.client.post("/webhooks/mailgun", data=body(payload)).status_code == 403
    assert hooks.status("recipient@example.com") == "active"
    assert hooks.events() == 1


@pytest.mark.both_backends
def test_a_mailgun_token_used_once_is_refused_by_every_process_of_the_site(
        hooks: Hooks) -> None:
    """Mailgun signs the token, not the event: a copy of a signed request with another
    event in its body, sent to a second process of the site (or after a restart), must
    be refused too."""
    store = Store.from_settings(hooks.settings)
    other = create_app(hooks.settings, store, sns_transport=hooks.sns.transport).test_client()
    good = mailgun_payload("mailgun-failed-permanent.json")
    assert hooks.client.post("/webhooks/mailgun", data=body(good)).status_code == 200
    altered = good | {"event-data": sample("mailgun-complained.json")}
    try:
        assert other.post("/webhooks/mailgun", data=body(altered)).status_code == 403
    finally:
        store.close()
    assert hooks.status("recipient@example.com") == "active"
    assert hooks.events() == 1


def test_sendgrid_through_the_app(hooks: Hooks) -> None:
    payload = body(sample("sendgrid-events.json"))
    forged = SendGridSigner().headers(payload)
    assert hooks.client.post("/webhooks/sendgrid", data=payload,
                             headers=forged).status_code == 403
    headers = hooks.sendgrid.headers(payload)
    altered = payload.replace(b"noreply@", b"recipient@")
    assert hooks.client.post("/webhooks/sendgrid", data=altered,
                             headers=headers).status_code == 403
    stale = hooks.sendgrid.headers(payload, at=time.time() - 600)
    assert hooks.client.post("/webhooks/sendgrid", data=payload, headers=stale).status_code == 403
    assert hooks.events() == 0
    assert hooks.client.post("/webhooks/sendgrid", data=payload,
                             headers=headers).status_code == 200
    assert hooks.status("noreply@example.com") == "bounced"
    # The same request again, within the window: the same sg_event_id, recorded once.
    assert hooks.client.post("/webhooks/sendgrid", data=payload,
                             headers=headers).status_code == 200
    assert hooks.events() == 1
    assert hooks.status("recipient@example.com") == "active"   # the deferral


def test_unconfigured_providers_are_404_and_bodies_are_limited(
        digest: Digest, hooks: Hooks) -> None:
    settings = load_settings(digest.folder / "digest.toml",
                             environ={"DIGEST_SECRET_KEY": SECRET})
    store = Store.from_settings(settings)
    try:
        client = create_app(settings, store).test_client()
        for provider in ("ses", "postmark", "mailgun", "sendgrid", "sparkpost"):
            assert client.post(f"/webhooks/{provider}", data=b"{}").status_code == 404
    finally:
        store.close()
    assert hooks.client.get("/webhooks/ses").status_code == 405
    big = b"[" + b" " * (1024 * 1024) + b"]"
    assert hooks.client.post("/webhooks/sendgrid", data=big,
                             headers=hooks.sendgrid.headers(big)).status_code == 413


def test_a_sendgrid_key_that_is_no_key_is_one_line_at_start(digest: Digest) -> None:
    settings = load_settings(digest.folder / "digest.toml", environ={
        "DIGEST_SECRET_KEY": SECRET, "DIGEST_WEBHOOKS__SENDGRID_PUBLIC_KEY": "c2VjcmV0"})
    store = Store.from_settings(settings)
    try:
        with pytest.raises(ConfigError, match=r"^\[webhooks\] sendgrid_public_key: .*"):
            create_app(settings, store)
    finally:
        store.close()


# --- one request over real HTTP ---------------------------------------------------------

@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    port = free_port()
    server = WebServer(settings, "127.0.0.1", port, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        thread.join()


def test_a_signed_sendgrid_post_to_digest_serve(digest: Digest, tmp_path: Path) -> None:
    digest.ok("subscribers", "add", "noreply@example.com")
    signer = SendGridSigner()
    settings = load_settings(digest.folder / "digest.toml", environ=hooks_env(signer))
    payload = body(sample("sendgrid-events.json")[:1])
    with serving(settings) as base:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.post(f"{base}/webhooks/sendgrid", content=payload,
                                      headers=signer.headers(payload), timeout=HTTP_TIMEOUT)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        assert response.status_code == 200
        assert response.headers["server"] == "digest"
        assert httpx.post(f"{base}/webhooks/sendgrid", content=payload,
                          timeout=HTTP_TIMEOUT).status_code == 403
    assert sql(tmp_path, "SELECT status FROM subscribers") == [("bounced",)]
    assert sql(tmp_path, "SELECT kind, status, source FROM bounce_events") == \
        [("hard", "5.1.1", "webhook:sendgrid")]
