"""Which destinations outbound requests may reach: the address policy every request is checked against.

Why each rule exists:
- A Webhook URL is user input, and the operator and senders run inside a cluster, so a URL pointing at
  ``127.0.0.1``, a pod network, or a cloud metadata endpoint would turn hookline into a proxy for
  attacking the inside (SSRF). Such addresses are refused unless an operator allow-lists the network.
- Cloud metadata endpoints stay refused inside an allow-listed network unless the allow-list names the
  address itself: allowing a pod network must not expose node credentials.
- An IPv6 address that stands for an IPv4 one (mapped, 6to4, Teredo, NAT64) is judged as that IPv4 address.
- IP-literal URLs never reach a resolver, so they are checked before the request is made; legacy numeric
  IPv4 forms (``127.1``, ``0x7f000001``) are checked too, then refused as ambiguous.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping, Sequence

from yarl import URL

from hookline.sender.transport.errors import BlockedDestination, InvalidURL, blocked_message

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ENV_ALLOW_NETWORKS = "HOOKLINE_ALLOW_NETWORKS"
ENV_ALLOW_HTTP = "HOOKLINE_ALLOW_HTTP"

# Cloud instance metadata and credential endpoints, and what each is: refused even inside an
# allow-listed network (or a public one: Azure's WireServer is a public address) unless the allow-list
# names the address itself (/32 or /128); allowing a pod network must not expose node credentials.
METADATA_ENDPOINTS: dict[IPAddress, str] = {
    ipaddress.ip_address(address): what
    for address, what in (
        ("169.254.169.254", "instance metadata (AWS, Azure IMDS, GCP, OpenStack, DigitalOcean, ...)"),
        ("fd00:ec2::254", "AWS instance metadata (IPv6)"),
        ("169.254.170.2", "AWS ECS task metadata and credentials"),
        ("169.254.170.23", "AWS EKS Pod Identity agent"),
        ("fd00:ec2::23", "AWS EKS Pod Identity agent (IPv6)"),
        ("fd20:ce::254", "GCP metadata server (IPv6)"),
        ("168.63.129.16", "Azure WireServer (a public address)"),
        ("100.100.100.200", "Alibaba Cloud instance metadata"),
        ("192.0.0.192", "Oracle Cloud instance metadata (legacy address)"),
        ("169.254.0.23", "Tencent Cloud instance metadata"),
    )
}
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(METADATA_ENDPOINTS)

_SPECIAL_NETWORKS: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), label)
    for net, label in (
        ("0.0.0.0/8", "unspecified ('this network')"),
        ("127.0.0.0/8", "loopback"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("100.64.0.0/10", "shared (carrier-grade NAT)"),
        ("169.254.0.0/16", "link-local"),
        ("192.0.0.0/24", "IETF protocol assignment"),
        ("192.0.2.0/24", "documentation"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("198.18.0.0/15", "benchmarking"),
        ("192.88.99.0/24", "reserved (6to4 relay)"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("fc00::/7", "private (unique local)"),
        ("ff00::/8", "multicast"),
        ("100::/64", "discard-only"),
        ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
        ("2001:db8::/32", "documentation"),
        ("2001:2::/48", "benchmarking"),
        ("2001::/23", "IETF protocol assignment"),
        ("::/96", "reserved (IPv4-compatible)"),
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT (RFC 2765): ::ffff:0:a.b.c.d


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, translated, 6to4, Teredo client, NAT64)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or ip in _IPV4_TRANSLATED:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def metadata_endpoint(ip: IPAddress) -> str | None:
    """Which cloud metadata or credential endpoint an address is (IPv6 forms of IPv4 included), or None."""
    return METADATA_ENDPOINTS.get(_embedded_ipv4(ip) or ip) or METADATA_ENDPOINTS.get(ip)


def special_address_kind(ip: IPAddress) -> str | None:
    """What makes an address non-public (``"loopback"``, ``"private"``, ...), or None for a public one."""
    for network, label in _SPECIAL_NETWORKS:
        if ip.version == network.version and ip in network:
            return label
    if not ip.is_global:
        return "not publicly routable"
    return None


def _parse_network(value: str, source: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"{source}: {value.strip()!r} is not an IP network; use CIDR notation such as 10.0.0.0/8, "
            "127.0.0.1/32 or fd00::/8"
        ) from None


def _env_flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name}={env.get(name)!r} is not a boolean; use 1 or 0")


class EgressPolicy:
    """Which destinations outbound requests may reach. Immutable; cheap to share."""

    __slots__ = ("_allow_hosts", "allow_http", "allow_networks")

    def __init__(self, allow_networks: Iterable[str | IPNetwork] = (), allow_http: bool = False) -> None:
        networks = tuple(
            n
            if isinstance(n, (ipaddress.IPv4Network, ipaddress.IPv6Network))
            else _parse_network(n, "network")
            for n in allow_networks
        )
        self.allow_networks: tuple[IPNetwork, ...] = networks
        self.allow_http = bool(allow_http)
        self._allow_hosts = frozenset(n.network_address for n in networks if n.num_addresses == 1)

    @classmethod
    def from_cli(
        cls,
        args_networks: Sequence[str] | None,
        allow_http: bool | None,
        env: Mapping[str, str] = os.environ,
    ) -> EgressPolicy:
        """Flags ``--allow-network`` / ``--allow-http`` plus ``HOOKLINE_ALLOW_NETWORKS`` /
        ``HOOKLINE_ALLOW_HTTP``; ``allow_http=None`` means "not given on the command line"."""
        networks = [_parse_network(n, "--allow-network") for n in args_networks or ()]
        for item in env.get(ENV_ALLOW_NETWORKS, "").split(","):
            if item.strip():
                networks.append(_parse_network(item, ENV_ALLOW_NETWORKS))
        http = bool(allow_http) if allow_http is not None else _env_flag(env, ENV_ALLOW_HTTP)
        return cls(networks, http)

    @classmethod
    def for_dev(cls) -> EgressPolicy:
        """``hookline dev``'s default: loopback and plain http allowed (DESIGN.md)."""
        return cls(["127.0.0.0/8", "::1/128"], allow_http=True)

    def __repr__(self) -> str:
        nets = ", ".join(str(n) for n in self.allow_networks)
        return f"EgressPolicy(allow_networks=[{nets}], allow_http={self.allow_http})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EgressPolicy):
            return NotImplemented
        return (self.allow_networks, self.allow_http) == (other.allow_networks, other.allow_http)

    def __hash__(self) -> int:
        return hash((self.allow_networks, self.allow_http))

    def _allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self.allow_networks)

    def address_problem(self, address: str | IPAddress) -> str | None:
        """Why connecting to this address is refused, or None when it is allowed."""
        ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
        effective = _embedded_ipv4(ip) or ip
        if effective in METADATA_ADDRESSES or ip in METADATA_ADDRESSES:
            if effective in self._allow_hosts or ip in self._allow_hosts:
                return None
            exact = f"{effective}/{effective.max_prefixlen}"
            return (
                f"{ip} is a cloud metadata endpoint ({metadata_endpoint(ip)}); it is allowed only by "
                f"naming it exactly ({exact})"
            )
        if self._allowed(effective) or self._allowed(ip):
            return None
        kind = special_address_kind(effective)
        if kind is None:
            return None
        shown = f"{ip} ({effective})" if effective != ip else str(ip)
        article = "an" if kind[0] in "aeiouAEIOU" else "a"
        return (
            f"{shown} is {article} {kind} address; if this destination is intended, allow its network with "
            f"--allow-network CIDR / {ENV_ALLOW_NETWORKS}"
        )

    def check_url(self, url: str | URL) -> URL:
        """Parse and check scheme, user info and (for IP literals) the address; return the URL."""
        try:
            parsed = url if isinstance(url, URL) else URL(url)
        except (ValueError, TypeError) as exc:
            raise InvalidURL(f"not a valid URL: {exc}", "invalid url") from None
        if parsed.scheme not in ("http", "https") or not parsed.is_absolute():
            raise InvalidURL("only absolute http:// and https:// URLs can be requested", "invalid url")
        if not parsed.raw_host:
            raise InvalidURL("the URL has no host", "invalid url")
        if parsed.scheme == "http" and not self.allow_http:
            raise BlockedDestination(
                f"plain http:// to {parsed.host} is refused; use https://, or allow http with "
                f"--allow-http / {ENV_ALLOW_HTTP}=1",
                "http not allowed",
            )
        if parsed.user is not None or parsed.password is not None:
            raise BlockedDestination(
                "URLs with user:password@ are refused (credentials would leak into logs); "
                "use signing or spec.headers instead",
                "userinfo in url",
            )
        host = parsed.host or ""
        legacy = False
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            literal = _legacy_ipv4(host)
            legacy = literal is not None
        if literal is not None:
            problem = self.address_problem(literal)
            if problem:
                raise BlockedDestination(blocked_message(host, problem), "blocked address")
            if legacy:
                raise InvalidURL(
                    f"{host} is a legacy numeric form of {literal}; write the address as {literal}",
                    "invalid url",
                )
        return parsed


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """``127.1``, ``0x7f000001``, ``2130706433``...: forms C resolvers read as IPv4 but ipaddress does not."""
    if not host or not all(part.isalnum() for part in host.split(".")):
        return None
    if not all(part.isdigit() or part.lower().startswith("0x") for part in host.split(".")):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


__all__ = [
    "ENV_ALLOW_HTTP",
    "ENV_ALLOW_NETWORKS",
    "METADATA_ADDRESSES",
    "METADATA_ENDPOINTS",
    "EgressPolicy",
    "IPAddress",
    "IPNetwork",
    "metadata_endpoint",
    "special_address_kind",
]
