"""Which extra headers a Webhook may set: the rule the API validates and the sender applies.

It sits with hookline/api/ at the bottom of the import graph, because the spec's validation
(``spec.headers``) and the sender's request building must refuse the same names for the same reasons.
"""

from __future__ import annotations

import re

# Headers the sender owns: transport (hop-by-hop), framing (Host, Content-*), identity and signature.
HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
RESERVED_HEADERS = HOP_BY_HOP_HEADERS | {"host", "user-agent", "expect"}
RESERVED_HEADER_PREFIXES = ("content-", "webhook-")
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def header_name_problem(name: str) -> str | None:
    """Why an extra header name from a Webhook spec is not allowed, or None when it is fine."""
    if not _HEADER_NAME_RE.fullmatch(name):
        return "is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)"
    lower = name.lower()
    if lower in HOP_BY_HOP_HEADERS:
        return "is a hop-by-hop header, which the HTTP client manages"
    if lower in RESERVED_HEADERS or lower.startswith(RESERVED_HEADER_PREFIXES):
        return "is set by hookline itself (Host, User-Agent, Content-*, webhook-*) and cannot be overridden"
    return None


def header_value_problem(value: str) -> str | None:
    if any(ch in value for ch in "\r\n\0"):
        return "must not contain line breaks or NUL"
    return None
