"""digest serve: the subscriber pages."""

from __future__ import annotations

import ipaddress
import signal
from typing import Any

import click

from ..web.app import WebServer
from .app import App, err, log_to_stderr, out

__all__ = ["serve"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.pass_obj
def serve(app: App, host: str, port: int) -> None:
    """Serve the subscriber pages: one-click unsubscribe, sign-up with confirmation,
    topic preferences, and the archive (with an Atom feed); confirmation mails go out
    through [smtp] from a background thread. The editors' pages are at /admin (users:
    digest admin add-user), and with [tracking] clicks the read-more links at /r/.
    [digest] base_url must be the public address of this server; behind your TLS proxy,
    set [web] trusted_proxies.

    Example:

    \b
        digest serve --host 127.0.0.1 --port 8080
    """
    settings = app.settings
    log_to_stderr(settings)
    if settings.web.trusted_proxies and not _loopback(host):
        # Reachable directly, anyone could write the X-Forwarded-For the app trusts.
        err.print(f"Warning: [web] trusted_proxies = {settings.web.trusted_proxies} trusts "
                  f"X-Forwarded-For, but --host {host} lets clients reach digest directly "
                  f"and choose their own address: bind to --host 127.0.0.1 behind the "
                  f"proxy, or set trusted_proxies = 0")
    server = WebServer(settings, host, port,     # refuses without a signing key
                       store=app.store, clock=app.clock)

    def terminate(_signum: int, _frame: Any) -> None:
        raise SystemExit(0)     # waitress ends its loop; the outbox finishes its pass

    signal.signal(signal.SIGTERM, terminate)
    out.print(f"Serving {settings.digest.name} on http://{host}:{port} (links in mail "
              f"point to {settings.digest.base_url}); Ctrl-C stops.")
    server.run()


def _loopback(host: str) -> bool:
    """Whether host is a loopback address (or localhost): only this machine reaches it."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[] ")).is_loopback
    except ValueError:
        return False
