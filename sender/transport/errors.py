"""What a request that got no HTTP response raised, and the short reason it gives.

Every failure is a `SafeHTTPError` whose ``kind`` sorts it (blocked, timeout, connection_error, redirect,
invalid_url) and whose ``reason`` is a few fixed words: reasons end up in metric labels, status lines and
dead letters, so they carry no free text (no addresses, no server messages). Pure types and helpers
(aiohttp is imported only for its exception types): the delivery policy (sender/delivery/retry.py)
classifies with them without loading the client.
"""

from __future__ import annotations

import ssl as ssl_module

import aiohttp


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


class Disconnected(Exception):
    """The server closed the connection before a complete response (raised on the HTTP/1.1 POST path,
    http1.py, and turned into a `ConnectionFailed` by `no_response`)."""


class Malformed(Exception):
    """The response was not valid HTTP/1.1 (the HTTP/1.1 POST path's, like `Disconnected`)."""


def blocked_message(host: str, problem: str) -> str:
    """The one wording of a refusal, for an IP-literal URL (egress.py) and a resolved host (resolver.py)."""
    return f"refused to connect to {host}: {problem}"


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
    if isinstance(exc, (aiohttp.ServerDisconnectedError, Disconnected)):
        return "server disconnected"
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ClientResponseError, Malformed)):
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


def no_response(host: str | None, exc: BaseException, seconds: float) -> SafeHTTPError:
    """The SafeHTTPError for a request to `host` that failed with `exc` (both request paths)."""
    if isinstance(exc, TimeoutError):
        return RequestTimeout(f"no complete answer from {host} within {seconds:g} s", "timeout")
    return connection_failed(host, _failure_reason(exc))


def connection_failed(host: str | None, reason: str) -> ConnectionFailed:
    return ConnectionFailed(f"request to {host} failed: {reason}", reason)


__all__ = [
    "BlockedDestination",
    "ConnectionFailed",
    "Disconnected",
    "InvalidURL",
    "Malformed",
    "RedirectRefused",
    "RequestTimeout",
    "SafeHTTPError",
    "blocked_message",
    "connection_failed",
    "no_response",
]
