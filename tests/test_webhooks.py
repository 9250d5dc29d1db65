"""Provider webhooks (SES through SNS, Postmark, Mailgun, SendGrid): requests signed the
way each provider signs them, with keys and certificates made here, against the payloads
the providers publish (tests/data/webhooks/, see tests/data/SOURCES.md).

There is no internet here: Amazon's certificate host cannot be reached, so the SNS client
is given an httpx.MockTransport that stands in for sns.<region>.amazonaws.com and serves
the certificate this test made.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from conftest import DATA, need
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

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
from digest.config import WebhooksSettings
from digest.store.models import BounceKind

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
    [finding] = verify_and_read_ses(body(message), SETTINGS, sns)
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
        body(sns_notification("ses-complaint-with-feedback.json", fake_sns.key)), SETTINGS, sns)
    assert (complaint.recipient, complaint.kind) == ("richard@example.com",
                                                     BounceKind.COMPLAINT)
    assert verify_and_read_ses(body(sns_notification("ses-delivery.json", fake_sns.key)),
                               SETTINGS, sns) == []
    for bounce_type, kind in (("Transient", BounceKind.SOFT),
                              ("Undetermined", BounceKind.SOFT)):
        message = sample("sns-notification.json")
        ses = sample("ses-bounce-with-dsn.json")
        ses["bounce"]["bounceType"] = bounce_type
        message.update(Message=json.dumps(ses), Timestamp=iso(time.time()))
        sign_sns(message, fake_sns.key)
        assert [f.kind for f in verify_and_read_ses(body(message), SETTINGS, sns)] == [kind]
    # A complaint whose feedback type is not-spam is no complaint.
    not_spam = sample("ses-complaint-with-feedback.json")
    not_spam["complaint"]["complaintFeedbackType"] = "not-spam"
    message = sample("sns-notification.json")
    message.update(Message=json.dumps(not_spam), Timestamp=iso(time.time()))
    sign_sns(message, fake_sns.key)
    assert verify_and_read_ses(body(message), SETTINGS, sns) == []
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
            verify_and_read_ses(body(message), SETTINGS, sns)
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
        verify_and_read_ses(body(message), SETTINGS, SnsClient(fake_sns.transport))
    assert fake_sns.requests == []


def test_china_regions_are_sns_hosts_too(fake_sns: FakeSns) -> None:
    message = sns_notification("ses-bounce-with-dsn.json", fake_sns.key)
    message["SigningCertURL"] = ("https://sns.cn-north-1.amazonaws.com.cn/"
                                 "SimpleNotificationService-x.pem")
    assert len(verify_and_read_ses(body(message), SETTINGS, SnsClient(fake_sns.transport))) == 1


def test_a_subscription_confirmation_gets_its_subscribe_url(fake_sns: FakeSns) -> None:
    message = sample("sns-subscription-confirmation.json")
    message["Timestamp"] = iso(time.time())
    sign_sns(message, fake_sns.key)
    assert verify_and_read_ses(body(message), SETTINGS, SnsClient(fake_sns.transport)) == []
    certificate, confirmation = fake_sns.requests
    assert confirmation.method == "GET"
    assert str(confirmation.url) == message["SubscribeURL"]
    # Signed, but the SubscribeURL is not on an SNS host: not fetched.
    fake_sns.requests.clear()
    message["SubscribeURL"] = "https://attacker.example/?Action=ConfirmSubscription"
    sign_sns(message, fake_sns.key)
    with pytest.raises(WebhookRejected, match="SubscribeURL"):
        verify_and_read_ses(body(message), SETTINGS, SnsClient(fake_sns.transport))
    assert [r.url.host for r in fake_sns.requests] == ["sns.us-west-2.amazonaws.com"]


def test_not_json_is_malformed_and_an_empty_topic_list_accepts_nothing(
        fake_sns: FakeSns) -> None:
    sns = SnsClient(fake_sns.transport)
    with pytest.raises(WebhookMalformed):
        verify_and_read_ses(b"<xml/>", SETTINGS, sns)
    message = sns_notification("ses-bounce-with-dsn.json", fake_sns.key)
    with pytest.raises(WebhookRejected, match="TopicArn"):
        verify_and_read_ses(body(message), WebhooksSettings(), sns)


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
                                     SETTINGS)
    assert (hard.recipient, hard.kind, hard.status) == ("invalid@example.com",
                                                        BounceKind.HARD, "5.1.1")
    assert hard.occurred_at == datetime(2018, 8, 12, 21, 47, 2, 389832, UTC)
    [soft] = verify_and_read_mailgun(body(mailgun_payload("mailgun-failed-temporary.json")),
                                     SETTINGS)
    assert (soft.recipient, soft.kind, soft.reason) == ("undeliverable@nomx.example.com",
                                                        BounceKind.SOFT,
                                                        "No MX for nomx.example.com")
    payload = mailgun_payload("mailgun-complained.json")
    [complaint] = verify_and_read_mailgun(body(payload), SETTINGS)
    assert (complaint.kind, complaint.report_id) == (BounceKind.COMPLAINT,
                                                     "mailgun:ncV2XwymRUKbPek_MIM-Gw")


def test_mailgun_forged_stale_and_replayed_tokens_are_rejected() -> None:
    seen = SeenTokens(SETTINGS.max_age_seconds)
    forged = mailgun_payload("mailgun-failed-permanent.json", key="not the key")
    stale = mailgun_payload("mailgun-failed-permanent.json", at=time.time() - 301)
    future = mailgun_payload("mailgun-failed-permanent.json", at=time.time() + 301)
    for payload in (forged, stale, future):
        with pytest.raises(WebhookRejected):
            verify_and_read_mailgun(body(payload), SETTINGS, seen=seen)
    good = mailgun_payload("mailgun-failed-permanent.json")
    assert len(verify_and_read_mailgun(body(good), SETTINGS, seen=seen)) == 1
    # The same token again, as it was or with another event: a replay.
    altered = good | {"event-data": sample("mailgun-complained.json")}
    for payload in (good, altered):
        with pytest.raises(WebhookRejected, match="replay"):
            verify_and_read_mailgun(body(payload), SETTINGS, seen=seen)
    # Forgotten (its findings could not be recorded): the provider's next try is taken.
    seen.forget(good["signature"]["token"])
    assert len(verify_and_read_mailgun(body(good), SETTINGS, seen=seen)) == 1


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
                                 SETTINGS)
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
                                     load_sendgrid_key(signer.public), SETTINGS)
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
