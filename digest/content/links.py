"""URLs: the canonical form used for de-duplication, and tracking parameters on our links."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["add_utm", "canonical_url", "is_web_url"]

_TRACKING_PREFIXES = ("utm_", "mc_", "pk_", "hsa_", "_hs")
_TRACKING_NAMES = {
    "fbclid", "gclid", "dclid", "gclsrc", "msclkid", "yclid", "igshid", "mkt_tok", "ref",
    "ref_src", "ref_url", "cmpid", "ncid", "sr_share", "smid", "smtyp", "cid",
    "__twitter_impression",
    "_ga", "_gl", "oly_anon_id", "oly_enc_id", "rss", "src", "spm", "wt_mc", "wt.mc_id",
}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_web_url(url: str | None) -> bool:
    """True for an absolute http(s) URL with a host."""
    if not url:
        return False
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def canonical_url(url: str | None) -> str | None:
    """The form two links to the same page share: lower-case scheme and host, no default
    port, no fragment, no tracking parameters, sorted query, no trailing slash.
    None for anything that is not an http(s) URL."""
    if not is_web_url(url):
        return None
    assert url is not None
    parts = urlsplit(url.strip())
    scheme = "https" if parts.scheme.lower() in ("http", "https") else parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port in (None, _DEFAULT_PORTS.get(parts.scheme.lower())) else f"{host}:{port}"
    query = sorted(
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.lower().startswith(_TRACKING_PREFIXES) and k.lower() not in _TRACKING_NAMES
    )
    path = parts.path or "/"
    while "//" in path:
        path = path.replace("//", "/")
    if len(path) > 1:
        path = path.rstrip("/")
    return urlunsplit((scheme, netloc, path, urlencode(query), ""))


def add_utm(url: str, source: str, medium: str, campaign: str) -> str:
    """url with utm_source/medium/campaign set (existing utm_* replaced); unchanged when
    source is empty."""
    if not source:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if not k.lower().startswith("utm_")]
    query += [("utm_source", source), ("utm_medium", medium), ("utm_campaign", campaign)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))
