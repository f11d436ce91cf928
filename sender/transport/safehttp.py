"""THE outbound HTTP client: every verification, delivery and WebhookTest request goes through it.

Why each rule exists:
- A Webhook URL is user input, and the operator and senders run inside a cluster, so a URL pointing at
  ``127.0.0.1``, a pod network, or a cloud metadata endpoint would turn hookline into a proxy for
  attacking the inside (SSRF). Such addresses are refused unless an operator allow-lists the network.
- The host is resolved once per connection by a resolver that checks EVERY address it got (one private
  address among public ones refuses the host), and the connection goes to exactly those addresses, so
  a second, different DNS answer (rebinding) cannot slip in between check and connect.
- IP-literal URLs never reach a resolver, so they are checked before the request is made.
- Redirects: never followed for POST (a delivery is answered by the URL the customer verified); for GET
  (verification) at most `MAX_REDIRECTS`, and only within the same scheme, host and port.
- A total time limit per request (DNS, connect, send, read) and a cap on the response body read; the
  excess is discarded, not an error, because receivers often answer with whole HTML pages.
- POSTs (deliveries) go over a lean HTTP/1.1 keep-alive pool of this module under the same rules, for
  CPU: see "POST over plain asyncio" below.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ipaddress
import math
import os
import re
import socket
import ssl as ssl_module
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp
import httptools
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from hookline import USER_AGENT

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
DEFAULT_CONNECTION_LIMIT = 100
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
ENV_ALLOW_NETWORKS = "HOOKLINE_ALLOW_NETWORKS"
ENV_ALLOW_HTTP = "HOOKLINE_ALLOW_HTTP"

# Cloud instance metadata endpoints: refused even inside an allow-listed network unless the allow-list
# names the address itself (/32 or /128); allowing a pod network must not expose node credentials.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "fd00:ec2::23")
)

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


class SafeHTTPError(Exception):
    """A request that produced no HTTP response. ``kind`` sorts it, ``reason`` is short enough for a label
    or a status line; ``str()`` says what happened and what to do."""

    kind = "connection_error"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class BlockedDestination(SafeHTTPError):
    """The egress policy refused the URL or an address its host resolves to."""

    kind = "blocked"


class RequestTimeout(SafeHTTPError):
    kind = "timeout"


class ConnectionFailed(SafeHTTPError):
    kind = "connection_error"


class RedirectRefused(SafeHTTPError):
    """A GET was redirected to another origin, or too many times."""

    kind = "redirect"


class InvalidURL(SafeHTTPError):
    kind = "invalid_url"


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
            return f"{ip} is a cloud metadata endpoint; it is allowed only by naming it exactly ({exact})"
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
                raise BlockedDestination(_blocked_message(host, problem), "blocked address")
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


def _blocked_message(host: str, problem: str) -> str:
    return f"refused to connect to {host}: {problem}"


class PolicyResolver(AbstractResolver):
    """Resolves with an inner resolver and refuses the host if ANY address it resolves to is refused."""

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver) -> None:
        self._policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not results:
            raise OSError(f"{host} resolved to no address")
        for result in results:
            problem = self._policy.address_problem(result["host"])
            if problem:
                message = _blocked_message(f"{host} (resolves to {result['host']})", problem)
                raise BlockedDestination(message, "blocked address")
        return results

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class SafeResponse:
    status: int
    headers: CIMultiDictProxy[str] | Mapping[str, str]
    body: bytes
    elapsed: float  # seconds, from sending to the end of the (capped) body read, redirects included
    url: str = ""  # the URL that answered (after same-origin redirects)
    truncated: bool = False  # the body was longer than max_response_bytes

    def text(self, limit: int | None = None) -> str:
        body = self.body if limit is None else self.body[:limit]
        return body.decode("utf-8", errors="replace")


def _origin(url: URL) -> tuple[str, str | None, int | None]:
    return url.scheme, url.host, url.port


def _tls_reason(exc: BaseException | None) -> str:
    """A few fixed words a customer can act on (they also end up in dead letters, so no free text)."""
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        message = (exc.verify_message or "").lower()
        if "hostname mismatch" in message or "ip address mismatch" in message:
            return "tls error: certificate is not valid for this host name"
        if "expired" in message:
            return "tls error: certificate has expired"
        if "not yet valid" in message:
            return "tls error: certificate is not yet valid"
        return "tls error: certificate is not trusted (self-signed or unknown issuer)"
    return "tls error: handshake failed"


def _failure_reason(exc: BaseException) -> str:
    """The short reason of a request that got no response, on either path (aiohttp or the lean pool)."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns lookup failed"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _tls_reason(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientSSLError):
        return _tls_reason(getattr(exc, "os_error", None))
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, ConnectionRefusedError):
            return "connection refused"
        return (os_error.strerror or "connection failed").lower() if os_error else "connection failed"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, _Disconnected)):
        return "server disconnected"
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ClientResponseError, _Malformed)):
        return "malformed response"
    if isinstance(exc, aiohttp.InvalidURL):
        return "invalid url"
    if isinstance(exc, aiohttp.ClientError):
        return type(exc).__name__
    if isinstance(exc, ssl_module.SSLError):
        return _tls_reason(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError):
        return (exc.strerror or type(exc).__name__).lower()
    return type(exc).__name__


def _no_response(host: str | None, exc: BaseException, seconds: float) -> SafeHTTPError:
    """The SafeHTTPError for a request to `host` that failed with `exc` (both request paths)."""
    if isinstance(exc, TimeoutError):
        return RequestTimeout(f"no complete answer from {host} within {seconds:g} s", "timeout")
    return _connection_failed(host, _failure_reason(exc))


def _connection_failed(host: str | None, reason: str) -> ConnectionFailed:
    return ConnectionFailed(f"request to {host} failed: {reason}", reason)


# ---------------------------------------------------------------------------------------------------------
# POST over plain asyncio: deliveries are small POSTs, thousands a second, each answered with a status.
# aiohttp's general request machinery costs ~70 us of CPU per such POST, this lean HTTP/1.1 exchange
# ~25 us (bench/profile_http.py), and the sender is CPU-bound on it. The rules are the same: the policy
# resolver checks every address of every new connection, which goes only to those addresses; no
# redirects; one deadline; the body read is capped. llhttp (httptools) parses the responses. Other
# methods (ownership GETs with their redirects) stay on aiohttp; each path keeps at most `limit`
# connections.

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
DEADLINE_SWEEP_SECONDS = 0.05
_MAX_HEADER_BYTES = 64 * 1024  # a response head larger than this is refused (aiohttp's limits are similar)


class _Disconnected(Exception):
    """The server closed the connection before a complete response."""


class _Malformed(Exception):
    """The response was not valid HTTP/1.1."""


_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})  # the client's own


@functools.lru_cache(maxsize=256)
def _header_plan(names: tuple[str, ...]) -> tuple[bool, tuple[str, ...]]:
    """For the header names of a request (the same for every delivery of a Webhook): whether any must
    be dropped (framing belongs to the client), and which defaults the request still needs."""
    lowered = set()
    for name in names:
        if not _TOKEN_RE.fullmatch(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP token")
        lowered.add(name.lower())
    missing = tuple(d for d in ("host", "user-agent", "accept", "content-type") if d not in lowered)
    return bool(lowered & _FRAMING_HEADERS), missing


def _request_head(method: str, url: URL, headers: Mapping[str, str] | None, length: int) -> bytes:
    """Request line and headers; the caller's headers win over the defaults (Host, User-Agent, Accept)."""
    given: Mapping[str, str] = headers or {}
    drop, missing = _header_plan(tuple(given))
    values = "".join(given.values())
    if "\r" in values or "\n" in values or "\0" in values:
        bad = next(n for n, v in given.items() if "\r" in v or "\n" in v or "\0" in v)
        raise ValueError(f"header {bad!r} must not contain line breaks or NUL")
    items = [(n, v) for n, v in given.items() if n.lower() not in _FRAMING_HEADERS] if drop else given.items()
    parts = [f"{method} {url.raw_path_qs} HTTP/1.1"]
    parts.extend(map(": ".join, items))
    for default in missing:
        if default == "host":
            parts.append(f"Host: {url.host_port_subcomponent}")
        elif default == "user-agent":
            parts.append(f"User-Agent: {USER_AGENT}")
        elif default == "accept":
            parts.append("Accept: */*")
        elif length:  # content-type: as aiohttp labels bytes
            parts.append("Content-Type: application/octet-stream")
    parts.append(f"Content-Length: {length}\r\n\r\n")
    return "\r\n".join(parts).encode()


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one exchange at a time."""

    def __init__(self, pool: _Pool, origin: tuple[str, str, int]) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, CIMultiDictProxy[str], bytes, bool]] | None = None
        self.deadline = math.inf  # of the exchange in progress (loop time), watched by the pool
        self._reusable = False
        self._new_response()

    def _new_response(self) -> None:
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._body = bytearray()
        self._headers_done = False
        self._framed = False  # Content-Length or chunked; otherwise the body ends when the connection does
        self._decoder: Any = None  # zlib decompressor for a gzip/deflate body
        self._encoding = ""

    # asyncio.Protocol ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.abort()  # nothing was asked: a server talking out of turn loses the connection
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish(reusable=False)  # 101: nothing follows that we could read
        except httptools.HttpParserError as exc:
            cause = exc.__context__ if isinstance(exc.__context__, _Malformed) else exc
            self._fail(_Malformed(str(cause)))
            return
        if not self._headers_done and self._waiter is not None and not self._waiter.done():
            self._head_bytes += len(data)
            if self._head_bytes > _MAX_HEADER_BYTES:
                self._fail(_Malformed("response headers too large"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._headers_done and not self._framed:
                self._finish(reusable=False)  # a body without length ends with the connection
            else:
                self._fail(_Disconnected())
        self.pool.forget(self)

    # httptools callbacks -------------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))  # decoded once the answer is complete
        lower = name.lower()
        if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
            self._framed = True
        elif lower == b"content-encoding":
            self._encoding = value.strip().lower().decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self._encoding == "deflate":
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS)  # RFC 9110 deflate is zlib-wrapped

    def on_body(self, body: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        room = self.pool.cap + 1 - len(self._body)  # one byte over the cap tells "truncated"
        if self._decoder is not None:
            try:
                body = self._decoder.decompress(body, room)
            except zlib.error as exc:
                raise _Malformed(f"bad {self._encoding} body: {exc}") from None
        self._body += body[:room]
        if len(self._body) > self.pool.cap:
            self._finish(reusable=False)  # enough: the rest is discarded with the connection

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # interim (100 Continue, 103 Early Hints): the answer follows
            self._new_response()
            return
        self._finish(reusable=self._parser.should_keep_alive())

    # the exchange --------------------------------------------------------------------------------------
    def exchange(
        self, request: bytes, deadline: float
    ) -> asyncio.Future[tuple[int, CIMultiDictProxy[str], bytes, bool]]:
        """Send `request`; the future gets (status, headers, capped body, truncated) or the failure."""
        self._new_response()
        self._reusable = False
        waiter = self._waiter = self.pool.loop.create_future()
        self.deadline = deadline
        self.pool.watch(self)
        assert self.transport is not None
        self.transport.write(request)
        return waiter

    def _finish(self, reusable: bool) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        self.pool.unwatch(self)
        cap = self.pool.cap
        truncated = len(self._body) > cap
        self._reusable = reusable and not truncated and not self.closed
        pairs = [(n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in self._headers]
        headers = CIMultiDictProxy(CIMultiDict(pairs))
        waiter.set_result((self._parser.get_status_code(), headers, bytes(self._body[:cap]), truncated))
        if not self._reusable:
            self.abort()

    def _fail(self, exc: BaseException) -> None:
        self.pool.unwatch(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self._reusable = False
        self.abort()

    def usable(self) -> bool:
        """Can carry another exchange: the last one ended cleanly and the peer has not hung up."""
        transport = self.transport
        return self._reusable and not self.closed and transport is not None and not transport.is_closing()

    def abort(self) -> None:
        self.closed = True
        self.pool.unwatch(self)
        if self.transport is not None:
            self.transport.abort()


class _Pool:
    """Keep-alive connections per origin, at most `limit` open (or opening) at once."""

    def __init__(
        self,
        resolver: AbstractResolver,
        ssl_context: ssl_module.SSLContext,
        limit: int,
        keepalive_timeout: float,
        cap: int,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.cap = cap
        self._resolver = resolver
        self._ssl = ssl_context
        self._limit = limit
        self._keepalive = keepalive_timeout
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._connecting = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._busy: set[_Connection] = set()  # exchanges in progress, whose deadlines `_sweep` enforces
        self._sweeper: asyncio.TimerHandle | None = None

    # Deadlines: one timer per pool that wakes every DEADLINE_SWEEP_SECONDS while exchanges are in
    # progress, instead of a timer per request (scheduling and cancelling one cost more CPU than the
    # rest of the bookkeeping of an exchange). A timeout fires up to that much late.
    def watch(self, conn: _Connection) -> None:
        self._busy.add(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(DEADLINE_SWEEP_SECONDS, self._sweep)

    def unwatch(self, conn: _Connection) -> None:
        self._busy.discard(conn)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        for conn in [c for c in self._busy if c.deadline <= now]:
            conn._fail(TimeoutError())
        if self._busy:
            self._sweeper = self.loop.call_later(DEADLINE_SWEEP_SECONDS, self._sweep)

    def idle(self, origin: tuple[str, str, int]) -> _Connection | None:
        """A live idle connection to `origin`, newest first; stale ones are closed on the way."""
        idle = self._idle.get(origin)
        now = self.loop.time()
        while idle:
            conn = idle.pop()
            if conn.usable() and now - conn.idle_since < self._keepalive:
                return conn
            self._close(conn)
        return None

    async def connect(self, url: URL, origin: tuple[str, str, int]) -> _Connection:
        """Wait for room under the limit, then open a connection (DNS and TLS included)."""
        while True:
            conn = self.idle(origin)
            if conn is not None:
                return conn
            if len(self._open) + self._connecting < self._limit:
                break
            if not self._evict_idle():
                waiter = self.loop.create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled():
                        self._wake()  # the room this wake-up meant goes to the next in line
                    raise
        self._connecting += 1
        try:
            conn = await self._open_connection(url, origin)
        finally:
            self._connecting -= 1
            self._wake()
        self._open.add(conn)
        return conn

    async def _open_connection(self, url: URL, origin: tuple[str, str, int]) -> _Connection:
        host, port = origin[1], origin[2]
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
            targets = [(host, port, 0)]  # an IP literal, checked with the URL
        except ValueError:
            try:
                results = await self._resolver.resolve(host, port, socket.AF_UNSPEC)
            except SafeHTTPError:
                raise
            except OSError as exc:
                raise _connection_failed(host, "dns lookup failed") from exc
            targets = [(r["host"], r["port"], r["family"]) for r in results]
        tls = self._ssl if origin[0] == "https" else None
        last: OSError | None = None
        for address, target_port, family in targets:  # exactly the addresses the policy passed
            try:
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self, origin),
                    address,
                    target_port,
                    family=family,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
            except OSError as exc:
                last = exc
                continue
            return conn
        assert last is not None
        raise last

    def release(self, conn: _Connection) -> None:
        """Back to the idle list when the exchange left it reusable, else closed."""
        if conn.usable():
            conn.idle_since = self.loop.time()
            self._idle.setdefault(conn.origin, []).append(conn)
            self._wake()
        else:
            self._close(conn)

    def forget(self, conn: _Connection) -> None:
        """The connection is gone (closed by either side)."""
        if conn in self._open:
            self._open.discard(conn)
            idle = self._idle.get(conn.origin)
            if idle and conn in idle:
                idle.remove(conn)
            self._wake()

    def _close(self, conn: _Connection) -> None:
        conn.abort()
        self.forget(conn)

    def _evict_idle(self) -> bool:
        """At the limit: close an idle connection to another origin, if any, to make room."""
        for idle in self._idle.values():
            if idle:
                self._close(idle.pop(0))
                return True
        return False

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._open):
            conn._fail(_Disconnected())
            self.forget(conn)
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(_Disconnected())
        self._waiters.clear()


def _tls_context(ssl: ssl_module.SSLContext | bool) -> ssl_module.SSLContext:
    """What aiohttp uses for the same ``ssl`` argument: verified by default, unverified for False."""
    if isinstance(ssl, ssl_module.SSLContext):
        return ssl
    return _shared_tls_context(verify=ssl is not False)


@functools.cache
def _shared_tls_context(*, verify: bool) -> ssl_module.SSLContext:
    """One context per process, as aiohttp shares its default one: loading the system CA store costs
    ~830 KiB and ~50 ms, which a pool replica paid once per Webhook (bench/pool.py)."""
    context = ssl_module.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl_module.CERT_NONE
    return context


class SafeHTTPClient:
    """One keep-alive session behind the egress policy; use ``async with`` or `start`/`close`."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        limit: int = DEFAULT_CONNECTION_LIMIT,
        resolver: AbstractResolver | None = None,
        ssl: ssl_module.SSLContext | bool = True,
        keepalive_timeout: float = 30.0,
    ) -> None:
        if max_response_bytes < 0:
            raise ValueError("max_response_bytes must be >= 0")
        if limit < 1:
            raise ValueError("limit (concurrent connections) must be >= 1")
        self.policy = policy
        self.max_response_bytes = max_response_bytes
        self._limit = limit
        self._inner_resolver = resolver
        self._ssl = ssl
        self._keepalive_timeout = keepalive_timeout
        self._session: aiohttp.ClientSession | None = None
        self._pool: _Pool | None = None
        self._checked: dict[str, URL] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    async def start(self) -> Self:
        if self._session is None:
            resolver = PolicyResolver(self.policy, self._inner_resolver or aiohttp.DefaultResolver())
            self._pool = _Pool(
                resolver,
                _tls_context(self._ssl),
                self._limit,
                self._keepalive_timeout,
                self.max_response_bytes,
            )
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=0,
                resolver=resolver,
                ssl=self._ssl,
                keepalive_timeout=self._keepalive_timeout,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": USER_AGENT},
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
                trust_env=False,
                auto_decompress=True,
            )
        return self

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _check(self, url: str | URL) -> tuple[URL, str]:
        """The checked URL and its text, remembered: a sender posts to one URL thousands of times."""
        key = url if isinstance(url, str) else str(url)
        checked = self._checked.get(key)
        if checked is None:
            checked = self.policy.check_url(url)
            if len(self._checked) >= 1024:
                self._checked.clear()
            self._checked[key] = checked
        return checked, key

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        """aiohttp's own total deadline (DNS, connect, send, body read); one object per distinct value.

        It replaces an `asyncio.timeout` around the request: the session would otherwise run a second,
        idle timer machinery per request. Not rounded up to whole seconds (aiohttp's ceil_threshold).
        """
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=seconds, ceil_threshold=math.inf)
            if len(self._timeouts) >= 64:
                self._timeouts.clear()
            self._timeouts[seconds] = timeout
        return timeout

    async def request(
        self,
        method: str,
        url: str | URL,
        *,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,  # noqa: ASYNC109 (the seam in docs/internals.md)
        follow_redirects: bool = False,
    ) -> SafeResponse:
        """Send one request; any HTTP status is a response, everything else a SafeHTTPError."""
        target, text = self._check(url)
        session = self._session
        if session is None:
            await self.start()
            session = self._session
            assert session is not None
        if method == "POST" or method.upper() == "POST":
            return await self._post(target, text, data, headers, timeout)
        started = time.perf_counter()
        try:
            status, resp_headers, body, truncated = await self._send(
                session, method, target, data, headers, self._timeout(timeout)
            )
            if follow_redirects and status in REDIRECT_STATUSES and method.upper() in ("GET", "HEAD"):
                deadline = started + timeout
                hop = 0
                while status in REDIRECT_STATUSES and "Location" in resp_headers:
                    if hop == MAX_REDIRECTS:
                        raise RedirectRefused(
                            f"{target.host} redirected more than {MAX_REDIRECTS} times; serve the file "
                            "directly at the URL",
                            "too many redirects",
                        )
                    hop += 1
                    target = self._redirect_target(target, resp_headers["Location"])
                    text = str(target)
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        raise TimeoutError
                    status, resp_headers, body, truncated = await self._send(
                        session, method, target, data, headers, self._timeout(left)
                    )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _no_response(target.host, exc, timeout) from None
        return SafeResponse(status, resp_headers, body, time.perf_counter() - started, text, truncated)

    async def _post(
        self,
        target: URL,
        text: str,
        data: bytes | str | None,
        headers: Mapping[str, str] | None,
        seconds: float,
    ) -> SafeResponse:
        """A POST on the lean keep-alive pool (see `_Connection`); never redirected."""
        pool = self._pool
        assert pool is not None
        started = time.perf_counter()
        payload = data.encode() if isinstance(data, str) else data or b""
        origin = (target.scheme, target.raw_host or "", target.port or 0)
        deadline = pool.loop.time() + seconds
        try:
            request = _request_head("POST", target, headers, len(payload)) + payload
            conn = pool.idle(origin)
            if conn is None:
                async with asyncio.timeout_at(deadline):
                    conn = await pool.connect(target, origin)
            try:
                status, resp_headers, body, truncated = await conn.exchange(request, deadline)
            finally:
                pool.release(conn)
        except (TimeoutError, _Disconnected, _Malformed, OSError) as exc:
            raise _no_response(target.host, exc, seconds) from None
        return SafeResponse(status, resp_headers, body, time.perf_counter() - started, text, truncated)

    def _redirect_target(self, current: URL, location: str) -> URL:
        try:
            target = current.join(URL(location))
        except (ValueError, TypeError):
            raise RedirectRefused(
                f"{current.host} redirected to an invalid Location", "invalid redirect"
            ) from None
        if _origin(target) != _origin(current):
            raise RedirectRefused(
                f"{current.host} redirected to {target.scheme}://{target.host}:{target.port}, another "
                "origin; redirects are followed only within the same scheme, host and port, so serve "
                "the file at the URL itself",
                "redirect to another host",
            )
        return self.policy.check_url(target)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: URL,
        data: bytes | str | None,
        headers: Mapping[str, str] | None,
        limits: aiohttp.ClientTimeout,
    ) -> tuple[int, CIMultiDictProxy[str], bytes, bool]:
        async with session.request(
            method, url, data=data, headers=headers, allow_redirects=False, timeout=limits
        ) as resp:
            cap = self.max_response_bytes
            length = resp.content_length
            if length is not None and length <= cap:
                return resp.status, resp.headers, await resp.read(), False
            body = bytearray()
            while len(body) < cap:
                chunk = await resp.content.read(cap - len(body))
                if not chunk:
                    return resp.status, resp.headers, bytes(body), False
                body += chunk
            truncated = not resp.content.at_eof()
            return resp.status, resp.headers, bytes(body), truncated

    async def get(self, url: str | URL, **kwargs: Any) -> SafeResponse:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str | URL, **kwargs: Any) -> SafeResponse:
        return await self.request("POST", url, **kwargs)


__all__ = [
    "METADATA_ADDRESSES",
    "BlockedDestination",
    "ConnectionFailed",
    "EgressPolicy",
    "InvalidURL",
    "PolicyResolver",
    "RedirectRefused",
    "RequestTimeout",
    "SafeHTTPClient",
    "SafeHTTPError",
    "SafeResponse",
    "special_address_kind",
]
