"""THE outbound HTTP client: every verification, delivery and WebhookTest request goes through it.

Every URL is checked by the egress policy (egress.py) and every resolved address by the policy resolver
(resolver.py), on both request paths: POSTs (deliveries) on the lean HTTP/1.1 keep-alive pool (http1.py),
everything else on aiohttp. Why the rules here exist:
- Redirects: never followed for POST (a delivery is answered by the URL the customer verified); for GET
  (verification) at most `MAX_REDIRECTS`, and only within the same scheme, host and port.
- A total time limit per request (DNS, connect, send, read) and a cap on the response body read; the
  excess is discarded, not an error, because receivers often answer with whole HTML pages.
"""

from __future__ import annotations

import asyncio
import functools
import math
import ssl as ssl_module
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDictProxy
from yarl import URL

from hookline import USER_AGENT
from hookline.sender.transport.egress import EgressPolicy
from hookline.sender.transport.errors import Disconnected, Malformed, RedirectRefused, no_response
from hookline.sender.transport.http1 import KeepAlivePool, request_head
from hookline.sender.transport.resolver import PolicyResolver
from hookline.sender.transport.sharing import SHARED_POOL_LIMIT, EgressSharing, origin_of

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
DEFAULT_CONNECTION_LIMIT = 100
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


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
        sharing: EgressSharing | None = None,
        share_key: Hashable = None,
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
        # The process's keep-alive pools, one per `share_key` and what else a connection depends on.
        self._sharing = sharing
        shareable = (
            sharing is not None and share_key is not None and isinstance(ssl, bool) and resolver is None
        )
        self._shared_as: Hashable = (
            (share_key, policy.allow_networks, policy.allow_http, ssl, max_response_bytes, keepalive_timeout)
            if shareable
            else None
        )
        self._session: aiohttp.ClientSession | None = None
        self._pool: KeepAlivePool | None = None
        self._checked: dict[str, URL] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    async def start(self) -> Self:
        if self._session is None:
            resolver = PolicyResolver(self.policy, self._inner_resolver or aiohttp.DefaultResolver())

            def keepalive_pool(limit: int) -> KeepAlivePool:
                # The TLS context when a connection needs one: loading the CA store is ~20 ms of CPU,
                # paid inside a pool replica's start by the first engine, even one that posts over http.
                tls = functools.partial(_tls_context, self._ssl)
                return KeepAlivePool(resolver, tls, limit, self._keepalive_timeout, self.max_response_bytes)

            if self._shared_as is not None:
                assert self._sharing is not None
                self._pool = self._sharing.pool(self._shared_as, lambda: keepalive_pool(SHARED_POOL_LIMIT))
            else:
                self._pool = keepalive_pool(self._limit)
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
            if self._shared_as is not None:
                assert self._sharing is not None
                self._sharing.release(self._shared_as)  # the last of its clients closes it
            else:
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
            raise no_response(target.host, exc, timeout) from None
        return SafeResponse(status, resp_headers, body, time.perf_counter() - started, text, truncated)

    async def _post(
        self,
        target: URL,
        text: str,
        data: bytes | str | None,
        headers: Mapping[str, str] | None,
        seconds: float,
    ) -> SafeResponse:
        """A POST on the lean keep-alive pool (http1.py); never redirected."""
        pool = self._pool
        assert pool is not None
        started = time.perf_counter()
        payload = data.encode() if isinstance(data, str) else data or b""
        origin = origin_of(target)
        deadline = pool.loop.time() + seconds
        try:
            head = request_head("POST", target, headers, len(payload))
            conn = pool.idle(origin)
            if conn is None:
                async with asyncio.timeout_at(deadline):
                    conn = await pool.connect(target, origin)
            try:
                status, resp_headers, body, truncated = await conn.exchange(head, payload, deadline)
            finally:
                pool.release(conn)
        except (TimeoutError, Disconnected, Malformed, OSError) as exc:
            raise no_response(target.host, exc, seconds) from None
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
    "DEFAULT_CONNECTION_LIMIT",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT_SECONDS",
    "MAX_REDIRECTS",
    "SafeHTTPClient",
    "SafeResponse",
]
