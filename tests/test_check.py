"""`digest check` flags what would break later: a cron the scheduler refuses, a sender
address that is not one, subscribers left with none of the config's topics. Driven through
the CLI against a real SMTP server, so every other step passes and exit 1 is the flag's."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Digest, smtp_env

from digest.mail.loopback import LoopbackSMTPServer


@pytest.fixture
def env(smtp: LoopbackSMTPServer) -> dict[str, str]:
    return smtp_env(smtp)


def step(output: str, name: str) -> str:
    """The printed line of one step (the mark, the name, the detail)."""
    lines = [line for line in output.splitlines() if line[2:].startswith(f"{name}:")]
    assert len(lines) == 1, output
    return lines[0]


def test_a_sound_setup_passes_without_the_extra_steps(digest: Digest,
                                                      env: dict[str, str]) -> None:
    digest.ok("subscribers", "add", "ada@example.org", "--topic", "AI", env=env)
    result = digest("check", env={**env, "DIGEST_SCHEDULE__CRON": "30 0 8 * * mon"})
    assert result.exit_code == 0, result.output
    names = [line[2:].split(":")[0] for line in result.stdout.splitlines()]
    assert not {"schedule", "sender", "subscriber topics"} & set(names), result.output


@pytest.mark.parametrize(("cron", "why"), [
    ("61 8 * * *", "is not valid: Error validating expression '61': the last value (61) is "
                   "higher than the maximum value (59)"),
    ("0 8 * * funday", "is not valid: Invalid weekday name \"funday\""),
    ("every monday", "needs 5 fields (minute hour day month weekday), e.g. \"0 8 * * mon\""),
])
def test_a_cron_the_scheduler_refuses_is_flagged(digest: Digest, env: dict[str, str],
                                                 cron: str, why: str) -> None:
    env = {**env, "DIGEST_SCHEDULE__CRON": cron}
    result = digest("check", env=env)
    assert result.exit_code == 1
    assert step(result.stdout, "schedule") == (
        f"✗ schedule: [schedule] cron {cron!r} {why}; the scheduler refuses it: fix "
        f"[schedule] cron in {digest.folder / 'digest.toml'}")
    # The scheduler's side of the same parser says no too.
    assert digest("schedule", "show", env=env).exit_code == 1


def test_a_cron_that_never_comes_is_flagged(digest: Digest, env: dict[str, str]) -> None:
    result = digest("check", env={**env, "DIGEST_SCHEDULE__CRON": "0 8 30 2 *"})
    assert result.exit_code == 1
    assert step(result.stdout, "schedule") == (
        f"✗ schedule: [schedule] cron '0 8 30 2 *' never comes (no such date from now on), "
        f"so no edition would go out: fix [schedule] cron in {digest.folder / 'digest.toml'}")


@pytest.mark.parametrize(("sender", "why"), [
    ("Digest <digest@localhost>", "'digest@localhost' is not a valid email address: The part "
                                  "after the @-sign is not valid. It should have a period"),
    ("Digest <digest@example..org>", "'digest@example..org' is not a valid email address: An "
                                     "email address cannot have two periods in a row"),
    ("Digest digest@example.org", "'Digest digest@example.org' is not a valid email address: "
                                  "The email address contains invalid characters before the "
                                  "@-sign: SPACE"),
])
def test_an_invalid_sender_address_is_flagged(digest: Digest, env: dict[str, str],
                                              sender: str, why: str) -> None:
    result = digest("check", env={**env, "DIGEST_DIGEST__FROM": sender})
    assert result.exit_code == 1
    assert step(result.stdout, "sender") == (
        f"✗ sender: [digest] from {sender!r}: {why}; set [digest] from in "
        f"{digest.folder / 'digest.toml'} to \"Name <name@your-domain.example>\"")


def test_a_sender_without_an_address_is_flagged(digest: Digest, env: dict[str, str]) -> None:
    result = digest("check", env={**env, "DIGEST_DIGEST__FROM": "Weekly Digest"})
    assert result.exit_code == 1
    assert step(result.stdout, "sender") == (
        "✗ sender: [digest] from 'Weekly Digest' has no address; use "
        "\"Name <name@example.org>\"")


def test_subscribers_left_without_any_current_topic_are_flagged(
        digest: Digest, env: dict[str, str]) -> None:
    add = ["subscribers", "add"]
    digest.ok(*add, "ada@example.org", "--topic", "Sports", env=env)
    digest.ok(*add, "bob@example.org", "--topic", "Sports", "--topic", "Culture", env=env)
    digest.ok(*add, "cy@example.org", "--topic", "Sports", "--topic", "AI", env=env)  # keeps AI
    digest.ok(*add, "di@example.org", env=env)                                  # every topic
    digest.ok(*add, "ex@example.org", "--topic", "Sports", env=env)
    digest.ok("subscribers", "unsubscribe", "ex@example.org", env=env)          # not active
    config = digest.folder / "digest.toml"
    config.write_text(config.read_text().replace('name = "Sports"', 'name = "Athletics"')
                      .replace('name = "Culture"', 'name = "Arts"'))
    current = ("AI, Technology, Science, Business, World, Politics, Arts, Athletics, "
               "More stories")

    result = digest("check", env=env)
    assert result.exit_code == 1
    assert step(result.stdout, "subscriber topics") == (
        f"✗ subscriber topics: 2 active subscribers chose only topics the config no longer "
        f"has, so they get nothing (e.g. ada@example.org: Sports); give them current ones "
        f"with `digest subscribers set-topics ADDRESS TOPIC…` (topics: {current})")

    digest.ok("subscribers", "set-topics", "ada@example.org", "Athletics", env=env)
    result = digest("check", env=env)
    assert result.exit_code == 1
    assert step(result.stdout, "subscriber topics").startswith(
        "✗ subscriber topics: 1 active subscriber chose only topics the config no longer "
        "has, so they get nothing (e.g. bob@example.org: Sports, Culture); ")

    digest.ok("subscribers", "set-topics", "bob@example.org", "Arts", env=env)
    result = digest("check", env=env)
    assert result.exit_code == 0, result.output
    assert "subscriber topics" not in result.stdout


def test_the_mailgun_webhook_is_a_warning_naming_what_its_signature_leaves_out(
        digest: Digest, env: dict[str, str]) -> None:
    assert "Mailgun" not in digest("check", env=env).stdout
    result = digest("check", env={**env, "DIGEST_WEBHOOKS__MAILGUN_SIGNING_KEY": "key-1"})
    assert result.exit_code == 0, result.output       # a warning, not a failure
    line = step(result.stdout, "Mailgun webhook")
    assert line.startswith("! Mailgun webhook: on: Mailgun signs only a timestamp and a "
                           "token, not the event"), line
    assert "takes each token once" in line and "max_age_seconds (300 s)" in line


def test_example_values_still_in_place_are_warnings(digest: Digest,
                                                    env: dict[str, str]) -> None:
    # What config.example.toml ships: the setup works, but mail would come from and lead
    # to example.org, with the example's postal address in every footer.
    result = digest("check", env=env)
    assert result.exit_code == 0, result.output
    assert step(result.stdout, "from").startswith(
        "! from: [digest] from 'Weekly Digest <digest@example.org>' is an example address")
    assert step(result.stdout, "base_url").startswith(
        "! base_url: [digest] base_url 'https://digest.example.org' is the example's")
    assert step(result.stdout, "postal_address").startswith(
        "! postal_address: [digest] postal_address is the example's ('Example Media, 1 "
        "Example Street")
    # reply_to too, any example domain (and subdomain), in any case.
    result = digest("check", env={**env, "DIGEST_DIGEST__REPLY_TO": "Desk <desk@News.Example.COM>"})
    assert step(result.stdout, "reply_to").startswith("! reply_to: [digest] reply_to")
    # A real setup: no such line.
    real = {**env, "DIGEST_DIGEST__FROM": "Weekly <news@newsroom.de>",
            "DIGEST_DIGEST__BASE_URL": "https://news.newsroom.de",
            "DIGEST_DIGEST__POSTAL_ADDRESS": "Newsroom GmbH, Hauptstr. 1, 10115 Berlin"}
    result = digest("check", env=real)
    assert result.exit_code == 0, result.output
    names = [line[2:].split(":")[0] for line in result.stdout.splitlines()]
    assert not {"from", "reply_to", "base_url", "postal_address"} & set(names), result.output


def test_init_ends_by_naming_what_a_real_setup_sets(tmp_path: Path) -> None:
    result = Digest(tmp_path).ok("init", "news")
    tail = result.stdout.split("Before sending real mail, set in ", 1)[1]
    for setting in ("[smtp] host, port, username", "DIGEST_SMTP__PASSWORD", "[digest] from",
                    "[digest] base_url", "[digest] postal_address", "secret.key",
                    "DIGEST_SECRET_KEY", "digest check"):
        assert setting in tail, setting
