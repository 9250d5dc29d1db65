"""DKIM signatures made with `cryptography` and an incremental body hash, judged by dkimpy:
every message a real send delivers to a real SMTP server verifies, for each
canonicalisation, RSA and Ed25519, hostile and non-ASCII names included."""

from __future__ import annotations

import base64
from pathlib import Path

import dkim
import pytest
from conftest import Digest, smtp_env
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from digest.mail.loopback import LoopbackSMTPServer
from digest.mail.signing import BodyHasher, canonical_body, canonical_header

SAMPLE_JSON = Path(__file__).resolve().parent.parent / "digest" / "data" / "sample_articles.json"
NAMES = ["Zoë Reader", "Eve\r\nBcc: victim@example.org", "=?utf-8?q?=41?= Mallory",
         "😀" * 200, "\u202eevil", "Ada  Lovelace   (tabs\tand  spaces)", "..dot", ""]


def _keys(folder: Path) -> dict[str, tuple[Path, bytes]]:
    """An RSA-2048 and an Ed25519 key, as PEM files, with their DNS record's p= values."""
    out = {}
    pairs = {"rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
             "ed25519": ed25519.Ed25519PrivateKey.generate()}
    for kind, key in pairs.items():
        path = folder / f"{kind}.pem"
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        public = key.public_key()
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) \
            if kind == "ed25519" else public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        out[kind] = (path, base64.b64encode(raw))
    return out


def _dns(keys: dict[str, tuple[Path, bytes]]):  # type: ignore[no-untyped-def]
    records = {b"rsa-sel._domainkey.example.org.": b"v=DKIM1; k=rsa; p=" + keys["rsa"][1],
               b"ed-sel._domainkey.example.org.": b"v=DKIM1; k=ed25519; p=" + keys["ed25519"][1]}

    def lookup(name: bytes, timeout: int = 5) -> bytes:     # the DNS, answered here
        return records[name]
    return lookup


def _send(digest: Digest, smtp: LoopbackSMTPServer, env: dict[str, str]) -> list[bytes]:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    for i, name in enumerate(NAMES):
        digest.ok("subscribers", "add", f"reader{i}@example.org", "--name", name)
    digest.ok("subscribers", "add", "sport@example.org", "--topic", "Sports")
    digest.ok("send", "--yes", env=smtp_env(smtp, **env))
    assert len(smtp.received) == len(NAMES) + 1
    return [item.data for item in smtp.received]


@pytest.mark.parametrize("canonicalization", ["relaxed/relaxed", "simple/simple",
                                              "relaxed/simple", "simple/relaxed"])
def test_every_rsa_signed_message_verifies(digest: Digest, smtp: LoopbackSMTPServer,
                                           tmp_path: Path, canonicalization: str) -> None:
    keys = _keys(tmp_path)
    messages = _send(digest, smtp, {
        "DIGEST_DKIM__SELECTOR": "rsa-sel", "DIGEST_DKIM__DOMAIN": "example.org",
        "DIGEST_DKIM__PRIVATE_KEY": str(keys["rsa"][0]),
        "DIGEST_DKIM__CANONICALIZATION": canonicalization})
    for raw in messages:
        assert raw.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=" + canonicalization.encode())
        assert dkim.verify(raw, dnsfunc=_dns(keys)), raw[:600]
        tampered = raw.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                               b"List-Unsubscribe-Post: List-Unsubscribe=Two-Clicks")
        assert tampered != raw and not dkim.verify(tampered, dnsfunc=_dns(keys))
        body_tampered = raw.replace(b"Read more", b"Read less", 1)
        assert body_tampered != raw and not dkim.verify(body_tampered, dnsfunc=_dns(keys))


def test_ed25519_and_rsa_both_sign_and_both_verify(digest: Digest, smtp: LoopbackSMTPServer,
                                                   tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    messages = _send(digest, smtp, {
        "DIGEST_DKIM__SELECTOR": "rsa-sel", "DIGEST_DKIM__DOMAIN": "example.org",
        "DIGEST_DKIM__PRIVATE_KEY": str(keys["rsa"][0]),
        "DIGEST_DKIM__ED25519_SELECTOR": "ed-sel",
        "DIGEST_DKIM__ED25519_PRIVATE_KEY": str(keys["ed25519"][0])})
    for raw in messages:
        assert raw.startswith(b"DKIM-Signature: v=1; a=ed25519-sha256;")
        checker = dkim.DKIM(raw)
        assert checker.verify(idx=0, dnsfunc=_dns(keys))     # Ed25519
        assert checker.verify(idx=1, dnsfunc=_dns(keys))     # RSA
        tampered = raw.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                               b"List-Unsubscribe-Post: List-Unsubscribe=Two-Clicks")
        assert not dkim.DKIM(tampered).verify(idx=0, dnsfunc=_dns(keys))
        assert not dkim.DKIM(tampered).verify(idx=1, dnsfunc=_dns(keys))


def test_ed25519_alone(digest: Digest, smtp: LoopbackSMTPServer, tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    messages = _send(digest, smtp, {
        "DIGEST_DKIM__DOMAIN": "example.org", "DIGEST_DKIM__ED25519_SELECTOR": "ed-sel",
        "DIGEST_DKIM__ED25519_PRIVATE_KEY": str(keys["ed25519"][0])})
    for raw in messages:
        assert raw.count(b"DKIM-Signature:") == 1
        assert dkim.verify(raw, dnsfunc=_dns(keys))


def test_bad_keys_are_one_line(digest: Digest, tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    cases = [
        ({"DIGEST_DKIM__SELECTOR": "s", "DIGEST_DKIM__DOMAIN": "example.org",
          "DIGEST_DKIM__PRIVATE_KEY": str(junk)}, "is not an unencrypted PEM private key"),
        ({"DIGEST_DKIM__SELECTOR": "s", "DIGEST_DKIM__DOMAIN": "example.org",
          "DIGEST_DKIM__PRIVATE_KEY": str(keys["ed25519"][0])},
         "not the RSA key this setting takes"),
        ({"DIGEST_DKIM__DOMAIN": "example.org", "DIGEST_DKIM__ED25519_SELECTOR": "e"},
         "[dkim] needs ed25519_selector, domain and ed25519_private_key together"),
        ({"DIGEST_DKIM__CANONICALIZATION": "loose"},
         "'loose' is not one of relaxed/relaxed, simple/simple"),
    ]
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("subscribers", "add", "reader@example.org")
    for env, message in cases:
        result = digest("send", "--dry-run", env=env)
        assert result.exit_code == 1, (env, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_canonical_forms_are_rfc_6376s_examples() -> None:
    """RFC 6376 section 3.4.6."""
    assert canonical_header(b"A: X\r\n", True) == b"a:X\r\n"
    assert canonical_header(b"B : Y\t\r\n\tZ  \r\n", True) == b"b:Y Z\r\n"
    assert canonical_header(b"B : Y\t\r\n\tZ  \r\n", False) == b"B : Y\t\r\n\tZ  \r\n"
    assert canonical_body(b" C \r\nD \t E\r\n", True) == b" C\r\nD E\r\n"
    assert canonical_body(b" C \r\nD \t E\r\n", False) == b" C \r\nD \t E\r\n"


def test_the_incremental_hash_is_the_hash_of_the_whole_body() -> None:
    import hashlib

    fixed = [b"first line  \r\n", b"middle\t\tline\r\n", b"last \r\n"]
    personal = [b"Hello  Ada,=\r\n", b"https://x.example/u/abc=\r\n"]
    for relaxed in (True, False):
        hasher = BodyHasher(fixed[0], relaxed)
        hasher.fixed(1, fixed[1])
        hasher.fixed(2, fixed[2])
        whole = fixed[0] + personal[0] + fixed[1] + personal[1] + fixed[2]
        assert hasher.digest([personal[0], 1, personal[1], 2]) == \
            hashlib.sha256(canonical_body(whole, relaxed)).digest()


def test_check_names_each_key(digest: Digest, tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    result = digest("check", env={
        "DIGEST_DKIM__SELECTOR": "rsa-sel", "DIGEST_DKIM__DOMAIN": "example.org",
        "DIGEST_DKIM__PRIVATE_KEY": str(keys["rsa"][0]),
        "DIGEST_DKIM__ED25519_SELECTOR": "ed-sel",
        "DIGEST_DKIM__ED25519_PRIVATE_KEY": str(keys["ed25519"][0])})
    assert ("✓ DKIM: signing with ed25519-sha256 as ed-sel._domainkey.example.org, "
            "rsa-sha256 as rsa-sel._domainkey.example.org") in result.output


def test_a_big_send_signs_in_a_process_of_its_own(digest: Digest, smtp: LoopbackSMTPServer,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """From _SIGNING_PROCESS_FROM deliveries on, RSA signatures are made by another
    process, a batch asked for at once; every one must still be the message's own."""
    monkeypatch.setattr("digest.delivery.sender._SIGNING_PROCESS_FROM", 1)
    made: list[object] = []
    from digest.mail import signing

    real = signing.SigningProcess.__init__

    def spy(self: signing.SigningProcess, *args: object) -> None:
        real(self, *args)  # type: ignore[arg-type]
        made.append(self)
    monkeypatch.setattr(signing.SigningProcess, "__init__", spy)
    keys = _keys(tmp_path)
    messages = _send(digest, smtp, {
        "DIGEST_DKIM__SELECTOR": "rsa-sel", "DIGEST_DKIM__DOMAIN": "example.org",
        "DIGEST_DKIM__PRIVATE_KEY": str(keys["rsa"][0]),
        "DIGEST_DKIM__ED25519_SELECTOR": "ed-sel",
        "DIGEST_DKIM__ED25519_PRIVATE_KEY": str(keys["ed25519"][0]),
        "DIGEST_SMTP__CONNECTIONS": "2"})
    assert len(made) == 1
    for raw in messages:
        assert dkim.DKIM(raw).verify(idx=0, dnsfunc=_dns(keys))
        assert dkim.DKIM(raw).verify(idx=1, dnsfunc=_dns(keys))


def test_tickets_come_back_to_their_own_message(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    from digest.config import load_settings
    from digest.mail.signing import SigningProcess

    keys = _keys(tmp_path)
    settings = load_settings(None, environ={
        "DIGEST_DKIM__SELECTOR": "s", "DIGEST_DKIM__DOMAIN": "example.org",
        "DIGEST_DKIM__PRIVATE_KEY": str(keys["rsa"][0])})
    public = serialization.load_pem_private_key(keys["rsa"][0].read_bytes(), None).public_key()
    signing = SigningProcess(settings, 1)
    try:
        tickets = [signing.request(f"message {i}".encode()) for i in range(6)]
        signing.drop(tickets[1])
        signing.drop(tickets[4])
        for i in (5, 0, 3, 2):          # in any order, dropped ones thrown away
            public.verify(signing.result(tickets[i]), f"message {i}".encode(),  # type: ignore[union-attr]
                          padding.PKCS1v15(), hashes.SHA256())
        assert signing.sign(b"last") and not signing._local.done
    finally:
        signing.close()
