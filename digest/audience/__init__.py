"""The readers: subscribers (one service for the CLI and the web), the signed tokens of
their links, and the outbox of confirmation mails."""
