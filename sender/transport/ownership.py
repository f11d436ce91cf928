"""URL ownership: before anything is delivered, the customer proves control of the server by publishing
a file with an unguessable name and content (as Copernica does with ``smtpeter-xxxxx.txt``).

The file is looked for in the script's directory, then at the server root. The token is not a secret
(it is published in the Webhook's status by design): knowing it only lets someone prove ownership of a
server they control.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from hookline.api import OwnershipReason, ProofMethod, VerifiedReason
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.errors import BlockedDestination, RedirectRefused, SafeHTTPError

Reason = OwnershipReason
REASONS: tuple[Reason, ...] = OwnershipReason.__args__  # type: ignore[attr-defined]
VERIFIED_REASONS: frozenset[str] = frozenset(
    {VerifiedReason.FILE_MATCHED, VerifiedReason.RECORD_MATCHED, VerifiedReason.DOMAIN_VERIFIED}
)
FILE_PREFIX = "hookline-"
DEFAULT_CHECK_TIMEOUT = 10.0
_TOKEN_RE = re.compile(r"[0-9a-f]{32}")


def new_token() -> str:
    """128 random bits as 32 lower-case hex characters."""
    return secrets.token_hex(16)


def _check_token(token: str) -> None:
    if not _TOKEN_RE.fullmatch(token):
        raise ValueError("a verification token is 32 lower-case hex characters (see new_token())")


def verification_file_name(token: str) -> str:
    _check_token(token)
    return f"{FILE_PREFIX}{token}.txt"


def verification_locations(url: str, file_name: str) -> list[str]:
    """Where the file may be: the script's directory, then the root (one entry when they coincide).

    ``https://h/hooks/copernica.php`` -> ``https://h/hooks/<file>``, ``https://h/<file>``; a URL ending in
    ``/`` names a directory itself. Query, fragment and any user info are dropped.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL with a host: {url!r}")
    netloc = parts.netloc.rpartition("@")[2]
    path = parts.path or "/"
    directory = path if path.endswith("/") else path.rsplit("/", 1)[0] + "/"
    locations = [urlunsplit((parts.scheme, netloc, directory + file_name, "", ""))]
    root = urlunsplit((parts.scheme, netloc, "/" + file_name, "", ""))
    if root not in locations:
        locations.append(root)
    return locations


@dataclass(frozen=True, slots=True)
class OwnershipResult:
    """The answer of one check. ``message`` tells the user what to do next; ``location_errors`` maps each
    location that did not match to a short reason (``HTTP 404``, ``timeout``, ``content mismatch``).
    A DNS proof names its ``record`` and the TXT strings it found instead (``records_found``); a
    domain proof names the WebhookDomain in ``record``."""

    reason: Reason
    verified_url: str | None
    message: str
    location_errors: dict[str, str] = field(default_factory=dict)
    method: ProofMethod = "File"
    record: str | None = None
    records_found: tuple[str, ...] = ()

    @property
    def verified(self) -> bool:
        return self.reason in VERIFIED_REASONS


# Outcome of one location, ranked: when no location matches, the highest rank decides the reason.
_RANK: dict[Reason, int] = {"FileNotFound": 0, "Unreachable": 1, "ContentMismatch": 2, "Blocked": 3}


async def _check_location(
    client: SafeHTTPClient, location: str, token: str, per_location_timeout: float
) -> tuple[Reason, str]:
    try:
        response = await client.request("GET", location, timeout=per_location_timeout, follow_redirects=True)
    except BlockedDestination as exc:
        return "Blocked", str(exc)
    except RedirectRefused as exc:
        return "FileNotFound", exc.reason
    except SafeHTTPError as exc:
        return "Unreachable", exc.reason
    if 200 <= response.status < 300:
        if response.truncated:
            return "ContentMismatch", f"HTTP {response.status}, the file is far larger than the token"
        if response.text().strip() == token:
            return "FileMatched", ""
        return "ContentMismatch", f"HTTP {response.status}, content is not the token"
    if response.status >= 500:
        return "Unreachable", f"HTTP {response.status}"
    return "FileNotFound", f"HTTP {response.status}"


async def check_location(
    client: SafeHTTPClient, location: str, token: str, *, per_location_timeout: float = DEFAULT_CHECK_TIMEOUT
) -> tuple[Reason, str]:
    """One location's answer: ``("FileMatched", "")`` or the reason and a short detail (``HTTP 404``);
    `hookline verify` prints every location's."""
    return await _check_location(client, location, token, per_location_timeout)


def domain_file_locations(domain: str, file_name: str, *, allow_http: bool) -> list[str]:
    """Where a WebhookDomain's file may be: its web root over https (and http when the egress policy
    allows plain http)."""
    host = domain.strip().rstrip(".").lower()
    return [f"https://{host}/{file_name}"] + ([f"http://{host}/{file_name}"] if allow_http else [])


async def check_file_at(
    client: SafeHTTPClient,
    locations: list[str],
    token: str,
    *,
    per_location_timeout: float = DEFAULT_CHECK_TIMEOUT,
) -> OwnershipResult:
    """Look for the token file at each of ``locations``; the first match wins (a WebhookDomain's)."""
    file_name = verification_file_name(token)
    errors: dict[str, str] = {}
    worst: Reason = "FileNotFound"
    blocked_message = ""
    for location in locations:
        reason, detail = await _check_location(client, location, token, per_location_timeout)
        if reason == "FileMatched":
            return OwnershipResult("FileMatched", location, f"verified: {location} holds the token", errors)
        errors[location] = detail
        if reason == "Blocked":
            blocked_message = detail
        if _RANK[reason] > _RANK[worst]:
            worst = reason
    return OwnershipResult(
        worst, None, _advice(worst, file_name, token, locations, errors, blocked_message), errors
    )


async def check_ownership(
    client: SafeHTTPClient, url: str, token: str, *, per_location_timeout: float = DEFAULT_CHECK_TIMEOUT
) -> OwnershipResult:
    """Look for the verification file at each location; the first match wins."""
    locations = verification_locations(url, verification_file_name(token))
    return await check_file_at(client, locations, token, per_location_timeout=per_location_timeout)


def _advice(
    reason: Reason,
    file_name: str,
    token: str,
    locations: list[str],
    errors: dict[str, str],
    blocked_message: str,
) -> str:
    where = " or ".join(locations)
    place = f"place a file named {file_name} containing {token} at {where}"
    seen = "; ".join(f"{loc}: {err}" for loc, err in errors.items())
    if reason == "Blocked":
        return f"the URL's destination is refused by the egress policy ({blocked_message})"
    if reason == "ContentMismatch":
        return (
            f"a file was found but its content is not the token ({seen}); it must contain exactly "
            f"{token} (surrounding whitespace is ignored). A server that answers every path with a page "
            f"causes this too. To verify, {place}"
        )
    if reason == "Unreachable":
        return (
            f"could not fetch the verification file ({seen}); make sure the server is up and reachable, "
            f"then {place}. The check is retried"
        )
    return f"verification file not found ({seen}); to verify, {place}"
