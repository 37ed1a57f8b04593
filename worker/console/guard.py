"""Which requests the console takes: by the name they were sent to (``Host``), by the page that
sent them (``Origin``), and from which address (a trusted proxy's ``X-Forwarded-For``).

A web page the operator visits may rebind its own name to 127.0.0.1: the browser then sends
that page's requests, with ``Host: its.name``, to the console. Only loopback names, IP
addresses (a browser sends one only when it connected to it), the address the console listens
on and the names in ``WEBHOOKS_CONSOLE_ALLOWED_HOSTS`` are answered; ``/healthz`` answers any.

Behind a TLS proxy, ``WEBHOOKS_CONSOLE_TRUSTED_PROXIES`` names the proxy's addresses: from
those peers only, the client's address is read from ``X-Forwarded-For`` (the last hop the
proxies did not add) and the scheme from ``X-Forwarded-Proto``; cookies are then ``Secure``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.worker.config.settings import WorkerSettings

LOOPBACK_NAMES = frozenset({"localhost"})
#: A host name as it may appear in ``Host`` (letters, digits, dots, hyphens).
HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def host_name(header: str) -> str:
    """The name or address of a ``Host`` value, lower case, without port or brackets."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else ""
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Guard:
    allowed_hosts: frozenset[str] = LOOPBACK_NAMES
    trusted_proxies: tuple[Network, ...] = ()

    def host_allowed(self, header: str) -> bool:
        name = host_name(header)
        return bool(name) and (name in self.allowed_hosts or _is_ip(name))

    def origin_allowed(self, origin: str | None) -> bool:
        """No ``Origin`` (not sent by a browser's cross-site request) or one of this site's."""
        if origin is None:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and self.host_allowed(parts.netloc)

    def trusted(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.trusted_proxies)

    def client(
        self, peer: str, protocol: str, forwarded_for: str | None, forwarded_proto: str | None
    ) -> tuple[str, str]:
        """The client's address and scheme: the peer's own, unless the peer is a trusted
        proxy; then the hop before the trusted ones in ``X-Forwarded-For``, and the scheme
        the nearest proxy saw."""
        if not self.trusted(peer):
            return peer, protocol
        address = peer
        hops = [hop.strip() for hop in (forwarded_for or "").split(",")]
        for hop in reversed(hops):
            if not _is_ip(hop):
                break
            address = hop
            if not self.trusted(hop):
                break
        scheme = (forwarded_proto or "").split(",")[-1].strip().lower()
        return address, scheme if scheme in ("http", "https") else protocol


def _names(raw: str) -> list[str]:
    return [part for part in re.split(r"[,\s]+", raw.strip()) if part]


def guard(settings: WorkerSettings, listen_host: str | None = None) -> Guard:
    """The console's guard from its settings; ``ConfigError`` names a bad entry."""
    allowed = set(LOOPBACK_NAMES)
    for name in _names(settings.console_allowed_hosts):
        name = name.lower().rstrip(".")
        if not (HOST_NAME.match(name) or _is_ip(name)):
            raise ConfigError(
                f"WEBHOOKS_CONSOLE_ALLOWED_HOSTS: {name!r} is not a host name (no port, no scheme)"
            )
        allowed.add(name)
    if listen_host and not _is_ip(listen_host.strip("[]")):
        allowed.add(listen_host.lower())
    proxies = []
    for entry in _names(settings.console_trusted_proxies):
        try:
            proxies.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigError(
                f"WEBHOOKS_CONSOLE_TRUSTED_PROXIES: {entry!r} is not an IP address or network"
            ) from None
    return Guard(frozenset(allowed), tuple(proxies))
