"""DNS ownership proofs: a TXT record ``_hookline-challenge.<host>`` holding the token.

Many teams cannot place a file on an API gateway or a serverless endpoint but can publish a DNS
record (Copernica's newer documentation validates a domain this way). The lookup goes to the
configured nameservers (operator flag ``--dns-nameserver``, chart value verification.dns.nameservers)
or the system resolver, through dnspython's async resolver, with one timeout for the whole lookup;
nothing is cached, so a removed record is noticed at the next re-check. Only the TXT record is asked
for: no HTTP request is made, so the SSRF-safe HTTP client has no part in it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from hookline.sender.transport.ownership import OwnershipResult

CHALLENGE_LABEL = "_hookline-challenge"
DEFAULT_DNS_TIMEOUT = 5.0
MAX_RECORDS_SHOWN = 10  # status.verification.recordsFound (the CRD's maxItems)
MAX_RECORD_SHOWN_CHARS = 255


def challenge_record(host: str) -> str:
    """The TXT record that proves ``host``: ``_hookline-challenge.<host>`` (lower case, no final dot)."""
    return f"{CHALLENGE_LABEL}.{host.strip().rstrip('.').lower()}"


def parse_nameserver(text: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT``, ``[IPv6]:PORT`` or a bare IPv6 address -> (address, port); a clear error."""
    value = text.strip()
    address, port = value, 53
    if value.startswith("["):
        address, _, rest = value[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else -1 if rest else 53
    elif value.count(":") == 1:
        address, _, port_text = value.partition(":")
        port = int(port_text) if port_text.isdigit() else -1
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(
            f"DNS nameserver {text!r} is not an IP address (IP, IP:PORT or [IPv6]:PORT)"
        ) from None
    if not 0 < port < 65536:
        raise ValueError(f"DNS nameserver {text!r}: the port must be 1 to 65535")
    return address, port


@dataclass(frozen=True)
class TxtLookup:
    """What one TXT lookup found: ``strings`` (each record's strings joined), or why there are none.
    ``missing`` is NXDOMAIN or no TXT at the name; ``error`` a resolver that did not answer."""

    name: str
    strings: tuple[str, ...] = ()
    missing: str | None = None
    error: str | None = None


class TxtResolver:
    """TXT lookups through dnspython's async resolver: the system's, or ``nameservers`` (IP[:PORT])."""

    def __init__(self, nameservers: Sequence[str] = (), *, timeout: float = DEFAULT_DNS_TIMEOUT) -> None:
        if nameservers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(address, port)
                for address, port in (parse_nameserver(n) for n in nameservers)
            ]
        else:
            try:
                self._resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                self._resolver = dns.asyncresolver.Resolver(configure=False)
        self._resolver.cache = None  # a removed record is seen at the next re-check
        self._resolver.timeout = timeout
        self._resolver.lifetime = timeout
        self.timeout = timeout
        self.nameservers = tuple(nameservers)

    async def txt(self, name: str) -> TxtLookup:
        try:
            answer = await self._resolver.resolve(name, dns.rdatatype.TXT, search=False)
        except dns.resolver.NXDOMAIN:
            return TxtLookup(name, missing=f"{name} does not exist (NXDOMAIN)")
        except dns.resolver.NoAnswer:
            return TxtLookup(name, missing=f"{name} has no TXT record")
        except dns.resolver.LifetimeTimeout:
            return TxtLookup(name, error=f"no DNS answer for {name} within {self.timeout:g} s")
        except dns.resolver.NoNameservers:
            return TxtLookup(
                name, error=f"every DNS server failed to answer for {name} (SERVFAIL or refused)"
            )
        except dns.exception.DNSException as exc:
            return TxtLookup(name, error=f"DNS lookup of {name} failed: {exc}")
        strings = tuple(
            b"".join(rdata.strings).decode("utf-8", "replace")
            for rdata in answer  # type: ignore[attr-defined]
        )
        return TxtLookup(name, strings=strings)


def _shown(strings: Sequence[str]) -> tuple[str, ...]:
    return tuple(s[:MAX_RECORD_SHOWN_CHARS] for s in strings[:MAX_RECORDS_SHOWN])


def txt_result(lookup: TxtLookup, token: str) -> OwnershipResult:
    """What a TXT lookup means for a proof of ``token`` (pure: tests and `hookline verify` use it)."""
    name = lookup.name
    publish = f"publish a TXT record {name} holding {token}"
    if lookup.error is not None:
        return OwnershipResult(
            "Unreachable", None, f"{lookup.error}; the check is retried. To verify, {publish}",
            method="DNS", record=name,
        )  # fmt: skip
    if lookup.missing is not None:
        return OwnershipResult(
            "RecordNotFound", None, f"{lookup.missing}; to verify, {publish}", method="DNS", record=name
        )
    if any(s.strip() == token for s in lookup.strings):
        return OwnershipResult(
            "RecordMatched",
            None,
            f"verified: the TXT record {name} holds the token",
            method="DNS",
            record=name,
        )
    found = _shown(lookup.strings)
    listed = ", ".join(repr(s) for s in found)
    return OwnershipResult(
        "RecordMismatch",
        None,
        f"the TXT record {name} holds {listed} but not the token; to verify, {publish} "
        "(other TXT strings may stay beside it)",
        method="DNS",
        record=name,
        records_found=found,
    )


async def check_dns(resolver: TxtResolver, host: str, token: str) -> OwnershipResult:
    """Look up ``_hookline-challenge.<host>`` and compare its TXT strings with the token."""
    name = challenge_record(host)
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return txt_result(await resolver.txt(name), token)
    return OwnershipResult(
        "RecordNotFound",
        None,
        f"the URL's host {host} is an IP address, which has no DNS name for a TXT record; use the "
        "File method (spec.verification.method: File) or a host name",
        method="DNS",
        record=None,
    )
