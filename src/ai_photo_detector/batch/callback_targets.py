"""Where a job's webhook may go: the allow-list, and never into the service's own network.

A callback URL names a host; what matters is where it resolves. Loopback, link-local (cloud
metadata at 169.254.169.254 included), private, shared (carrier NAT), multicast and reserved
addresses are refused unless an operator allowed their network, at submission and again
before every attempt, and the attempt connects to the address that was checked (a name that
resolves elsewhere the second time cannot redirect it).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ai_photo_detector.errors import InputError
from ai_photo_detector.settings import WebhookSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier NAT, not "public"
MAX_URL_LENGTH = 2048


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise refused(f"the callback host {host!r} does not resolve") from exc
    return sorted({str(info[4][0]) for info in infos})


def refused(message: str) -> InputError:
    return InputError(message, "callback_refused")


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    address: str  # the checked address the attempt connects to

    def pinned_url(self) -> str:
        """The URL with the checked address in place of the name."""
        parts = urlsplit(self.url)
        shown = f"[{self.address}]" if ":" in self.address else self.address
        return parts._replace(netloc=f"{shown}:{self.port}").geturl()

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def _internal(address: IPAddress) -> str | None:
    """Why an address is off limits, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    checks = (  # the most specific name first: Python counts most of these as private too
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local (cloud metadata lives there)", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("shared (carrier NAT)", address in SHARED_ADDRESS_SPACE),
        ("private", address.is_private),
    )
    return next((name for name, hit in checks if hit), None)


def check_target(url: str, settings: WebhookSettings, resolver: Resolver = resolve) -> Target:
    """The callback's target, or ``InputError`` (code ``callback_refused``) saying why not."""
    if len(url) > MAX_URL_LENGTH:
        raise refused(f"the callback URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise refused(f"the callback URL is not valid: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in settings.schemes:
        raise refused(f"the callback URL must use {' or '.join(settings.schemes)}")
    host = (parts.hostname or "").lower()
    if not host:
        raise refused("the callback URL has no host")
    if parts.username is not None or parts.password is not None:
        raise refused("the callback URL must not carry credentials")
    if settings.allowed_hosts and not any(
        fnmatch.fnmatchcase(host, pattern.lower()) for pattern in settings.allowed_hosts
    ):
        raise refused(f"the callback host {host!r} is not in webhooks.allowed_hosts")
    port = port or (443 if scheme == "https" else 80)
    allowed = [ipaddress.ip_network(n, strict=False) for n in settings.allowed_networks]
    addresses = resolver(host, port)
    if not addresses:
        raise refused(f"the callback host {host!r} does not resolve")
    for text in addresses:
        address = ipaddress.ip_address(text.split("%")[0])
        why = _internal(address)
        if why is not None and not any(address in network for network in allowed):
            raise refused(
                f"the callback host {host!r} resolves to {address}, a {why} address; "
                "allow its network in webhooks.allowed_networks to reach it"
            )
    return Target(url, scheme, host, port, addresses[0])
