"""The errors digest raises on purpose.

The CLI turns every ``DigestError`` into one line (``Error: …``) and exit code 1;
anything else is a bug and keeps its traceback.

    DigestError
    ├── ConfigError        the config file or an environment override is wrong
    ├── StoreError         the database cannot be opened or is not a digest store
    ├── InputError         an import file, a CSV row, an address, a topic is bad
    ├── NothingToSend      no new articles (or nothing left) for an edition
    └── DeliveryError      the SMTP server or Maildir cannot take messages
        ├── ServerRefused  a 5xx about the session or the message, never a recipient
        │                  (at DATA: mail.transport.MessageRefused, which the sender
        │                  decides: one message's, or every message's like it)
        └── EditionPaused  the edition is paused (errors in a row, or ServerRefused)
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DeliveryError",
    "DigestError",
    "EditionPaused",
    "InputError",
    "NothingToSend",
    "NotFound",
    "ServerRefused",
    "StoreError",
]


class DigestError(Exception):
    """An expected failure, reported to the user as one line."""


class ConfigError(DigestError):
    """The configuration is invalid; the message names the key and the fix."""


class StoreError(DigestError):
    """The store cannot be opened or used."""


class InputError(DigestError):
    """User-supplied input (file, row, address, topic) is invalid."""


class NotFound(InputError):
    """What the request names (an edition, an article in it, a subscriber) is not there."""


class NothingToSend(DigestError):
    """There is nothing new to put in an edition, or nothing left to send."""


class DeliveryError(DigestError):
    """Messages cannot be handed to the transport."""


class ServerRefused(DeliveryError):
    """The SMTP server answered 5xx to the session (connect, EHLO, STARTTLS, AUTH) or to
    the message (MAIL FROM, DATA): the fault is the server's setup or the message, never
    a recipient's, so no delivery fails and no subscriber changes for it."""


class EditionPaused(DeliveryError):
    """Sending stopped after too many errors in a row; the rest stays pending."""
