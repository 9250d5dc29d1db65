"""The readers: subscribers (one service for the CLI and the web: add, import, sign-up,
confirm, unsubscribe, preferences), the confirmation mails and their outbox."""
