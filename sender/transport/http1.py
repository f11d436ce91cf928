"""POST over plain asyncio: the lean HTTP/1.1 keep-alive path that carries every delivery.

Deliveries are small POSTs, thousands a second, each answered with a status. aiohttp's general request
machinery costs ~70 us of CPU per such POST, this lean HTTP/1.1 exchange ~25 us (bench/profile_http.py),
and the sender is CPU-bound on it. The rules are the same: the policy resolver checks every address of
every new connection, which goes only to those addresses; no redirects; one deadline; the body read is
capped. llhttp (httptools) parses the responses. Other methods (ownership GETs with their redirects) stay
on aiohttp; each path keeps at most `limit` connections.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ipaddress
import math
import re
import socket
import ssl as ssl_module
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

import httptools
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from hookline import USER_AGENT
from hookline.sender.transport.errors import Disconnected, Malformed, SafeHTTPError, connection_failed

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
DEADLINE_SWEEP_SECONDS = 0.05
_MAX_HEADER_BYTES = 64 * 1024  # a response head larger than this is refused (aiohttp's limits are similar)
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


def request_head(method: str, url: URL, headers: Mapping[str, str] | None, length: int) -> bytes:
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


class ResponseHeaders(Mapping[str, str]):
    """A response's headers as read, decoded only when asked for: a delivery reads one (Retry-After),
    and building the case-insensitive multidict of all of them cost more than the rest of the answer."""

    __slots__ = ("_dict", "_pairs")

    def __init__(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self._pairs = pairs
        self._dict: CIMultiDictProxy[str] | None = None

    def _all(self) -> CIMultiDictProxy[str]:
        if self._dict is None:
            decoded = [(n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in self._pairs]
            self._dict = CIMultiDictProxy(CIMultiDict(decoded))
        return self._dict

    def get(self, key: str, default: Any = None) -> Any:
        """The first value of `key` (case-insensitive), without decoding the others."""
        wanted = key.lower().encode("latin-1")
        for name, value in self._pairs:
            if len(name) == len(wanted) and name.lower() == wanted:
                return value.decode("utf-8", "surrogateescape")
        return default

    def getall(self, key: str) -> list[str]:
        return self._all().getall(key)

    def __getitem__(self, key: str) -> str:
        return self._all()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __repr__(self) -> str:
        return f"<ResponseHeaders {dict(self._all())!r}>"


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one exchange at a time."""

    def __init__(self, pool: KeepAlivePool, origin: tuple[str, str, int]) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, ResponseHeaders, bytes, bool]] | None = None
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
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport's subclasses
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
            cause = exc.__context__ if isinstance(exc.__context__, Malformed) else exc
            self._fail(Malformed(str(cause)))
            return
        if not self._headers_done and self._waiter is not None and not self._waiter.done():
            self._head_bytes += len(data)
            if self._head_bytes > _MAX_HEADER_BYTES:
                self._fail(Malformed("response headers too large"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._headers_done and not self._framed:
                self._finish(reusable=False)  # a body without length ends with the connection
            else:
                self._fail(Disconnected())
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
                raise Malformed(f"bad {self._encoding} body: {exc}") from None
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
        self, head: bytes, body: bytes, deadline: float
    ) -> asyncio.Future[tuple[int, ResponseHeaders, bytes, bool]]:
        """Send the request `head` and `body`; the future gets (status, headers, capped body, truncated)
        or the failure."""
        self._new_response()
        self._reusable = False
        waiter = self._waiter = self.pool.loop.create_future()
        self.deadline = deadline
        self.pool.watch(self)
        transport = self.transport
        assert transport is not None
        if body:
            transport.writelines((head, body))  # one send, without copying the body into the head
        else:
            transport.write(head)
        return waiter

    def _finish(self, reusable: bool) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        self.pool.unwatch(self)
        cap = self.pool.cap
        truncated = len(self._body) > cap
        self._reusable = reusable and not truncated and not self.closed
        body = bytes(self._body[:cap]) if truncated else bytes(self._body)
        waiter.set_result((self._parser.get_status_code(), ResponseHeaders(self._headers), body, truncated))
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


class KeepAlivePool:
    """Keep-alive connections per origin, at most `limit` open (or opening) at once."""

    def __init__(
        self,
        resolver: AbstractResolver,
        tls_context: Callable[[], ssl_module.SSLContext],
        limit: int,
        keepalive_timeout: float,
        cap: int,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.cap = cap
        self._resolver = resolver
        self._tls_context = tls_context  # asked for at the first https connection, not before
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
                raise connection_failed(host, "dns lookup failed") from exc
            targets = [(r["host"], r["port"], r["family"]) for r in results]
        tls = self._tls_context() if origin[0] == "https" else None
        last: OSError | None = None
        for address, target_port, family in targets:  # exactly the addresses the policy passed
            try:
                transport, conn = await self.loop.create_connection(
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
            if conn.transport is None:  # uvloop calls connection_made on its next loop iteration
                conn.connection_made(transport)
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
            conn._fail(Disconnected())
            self.forget(conn)
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(Disconnected())
        self._waiters.clear()


__all__ = ["DEADLINE_SWEEP_SECONDS", "KeepAlivePool", "ResponseHeaders", "request_head"]
