"""Which network addresses a feed may be fetched from, and a transport that keeps to them.

A feed's address comes from whoever runs the feed (and every redirect from their
server), so without a check a feed could make us fetch the cloud metadata service, an
admin page on the loopback interface or a host on the office network, and publish the
answer as an article. The check is made on the addresses a host name resolves to, at the
moment of connecting, and the connection goes to the very address that was checked: a
name that resolves to a public address for the check and to 127.0.0.1 a moment later
(DNS rebinding) gains nothing, because there is no second lookup. TLS still verifies,
and SNI and the Host header still carry, the name from the URL.

What is refused unless [fetch] allow_private is true (an intranet's feeds): loopback,
private (RFC 1918, fc00::/7), link-local, site-local, multicast, unspecified, shared
(100.64.0.0/10) and every other address that is not globally routable, also when written
as an IPv4-mapped, NAT64 or 6to4 IPv6 address, and in any form the system resolver
accepts (2130706433, 0x7f.1, 127.1). Cloud metadata services (their addresses and names)
are refused whatever allow_private says: no feed lives there.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import httpcore
import httpx

from ..errors import InputError

__all__ = ["AddressRefused", "address_refusal", "guarded_transport", "resolve_checked"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata and platform services of the clouds (AWS incl. ECS/EKS and IPv6,
# GCP, Azure, Alibaba, Oracle, OpenStack): they hand out credentials to whoever asks.
_METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.170.23", "fd00:ec2::254",
    "168.63.129.16", "100.100.100.200", "192.0.0.192"))
_METADATA_NAMES = frozenset((
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data",
    "instance-data.ec2.internal", "metadata.azure.internal", "metadata.tencentyun.com"))

_SHARED = ipaddress.ip_network("100.64.0.0/10")
_PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

_HINT = "set [fetch] allow_private = true for intranet feeds"


class AddressRefused(InputError):
    """A host we will not connect to; the message says why and how to allow it."""


def _embedded(address: Address) -> Address:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, NAT64, 6to4), or itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return address


def address_refusal(address: Address, allow_private: bool = False) -> str | None:
    """What address is, when a feed may not be fetched from it ("a loopback address"),
    or None when it may."""
    if address in _METADATA_ADDRESSES or _embedded(address) in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if allow_private:
        return None
    plain = _embedded(address)
    kinds = (("an unspecified address", plain.is_unspecified),
             ("a loopback address", plain.is_loopback),
             ("a link-local address", plain.is_link_local),
             ("a multicast address", plain.is_multicast),
             ("a private address", any(plain in net for net in _PRIVATE
                                       if net.version == plain.version)),
             ("a shared (carrier-grade NAT) address", plain in _SHARED),
             ("a site-local address", isinstance(plain, ipaddress.IPv6Address)
              and plain.is_site_local))
    for kind, matches in kinds:
        if matches:
            return kind
    if plain.is_reserved or not plain.is_global:
        return "a reserved address"
    return None


def _why(host: str, address: Address | None, kind: str) -> str:
    fix = ("no feed is fetched from it" if kind.startswith("a cloud metadata")
           else _HINT)
    if address is None or _literal(host) == address:
        return f"{host} is {kind}; {fix}"
    return f"{host} resolves to {address}, {kind}; {fix}"


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def resolve_checked(host: str, port: int, allow_private: bool = False) -> list[str]:
    """The addresses host resolves to, every one of them allowed (in the resolver's
    order), or AddressRefused naming the first that is not. A name that cannot be
    resolved raises OSError (socket.gaierror), as connecting to it would."""
    name = host.strip("[]").rstrip(".").lower()
    if name in _METADATA_NAMES:
        raise AddressRefused(_why(host, None, "a cloud metadata service name"))
    found: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(name, port, type=socket.SOCK_STREAM):
        ip = str(sockaddr[0]).split("%")[0]          # a scope id ("fe80::1%eth0")
        address = ipaddress.ip_address(ip)
        kind = address_refusal(address, allow_private)
        if kind:
            raise AddressRefused(_why(host, address, kind))
        if str(sockaddr[0]) not in found:
            found.append(str(sockaddr[0]))
    return found


class _PinnedBackend(httpcore.NetworkBackend):
    """httpcore's own sockets, connected only to addresses checked the moment before:
    one lookup per connection, and that lookup's addresses are the ones dialled."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.sockets = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                    ) -> httpcore.NetworkStream:
        try:
            addresses = resolve_checked(host, port, self.allow_private)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from None
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                return self.sockets.connect_tcp(address, port, timeout, local_address,
                                                socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                            ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("feeds are not fetched over Unix sockets")

    def sleep(self, seconds: float) -> None:
        self.sockets.sleep(seconds)


def guarded_transport(allow_private: bool = False) -> httpx.HTTPTransport:
    """httpx's HTTP transport (httpx's TLS settings and pool limits), whose every
    connection, redirects included, goes through the address check. A client built on
    it uses no proxy from the environment (HTTP_PROXY): through a proxy we could not see
    the address connected to."""
    transport = httpx.HTTPTransport()
    limits = httpx.Limits()
    # httpx builds its connection pool without a way to choose the network backend: the
    # pool is replaced by the same pool over ours (tests/test_feed_addresses.py proves
    # the transport refuses, so a change in httpx cannot drop the check unnoticed).
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_PinnedBackend(allow_private))
    return transport
