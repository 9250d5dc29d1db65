"""From content to bytes on the wire: render (Jinja2 + premailer once per variant),
message (MIME with per-subscriber placeholders, DKIM), transport (SMTP and Maildir),
preview, and the loopback SMTP server of the demo and the tests."""
