"""`hookline verify WEBHOOK|DOMAIN [-n NS]`: check an ownership proof now and print what was found where.

For a Webhook: each file location with its HTTP answer, the TXT record ``_hookline-challenge.<host>``
with the strings it holds, and the WebhookDomains of the namespace that cover the host; for a
WebhookDomain: its TXT record or its file locations. The checks are the operator's own (the SSRF-safe
client, the same resolver code), made from where this command runs: a record or a file that only the
cluster can see shows as missing here. Nothing is written to the cluster. Exit 0 when the object's
proof is found (its own method, or a verified domain covering a Webhook's host), 1 when it is not.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
from typing import Any, TextIO
from urllib.parse import urlsplit

from hookline.api import WEBHOOK_PLURAL, SpecError, parse_webhook_spec
from hookline.api.domain import DOMAIN_PLURAL, host_covered, parse_domain_spec
from hookline.kubecli.client import KubeClient, NotFound
from hookline.kubecli.errors import CommandError, report
from hookline.kubecli.kube import add_connection_arguments, command_namespace, kube_config
from hookline.operator.rules.domains import index_entry, is_verified
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.dnsproof import DEFAULT_DNS_TIMEOUT, TxtResolver, challenge_record, txt_result
from hookline.sender.transport.egress import EgressPolicy
from hookline.sender.transport.ownership import (
    check_location,
    domain_file_locations,
    verification_file_name,
    verification_locations,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="WEBHOOK|DOMAIN", help="a Webhook, or a WebhookDomain, by name")
    add_connection_arguments(parser)
    parser.add_argument(
        "--domain",
        action="store_true",
        help="NAME is a WebhookDomain (default: a Webhook, else a WebhookDomain)",
    )
    parser.add_argument(
        "--dns-nameserver",
        action="append",
        default=[],
        metavar="IP[:PORT]",
        help="DNS server for the TXT lookup (repeatable; default: this machine's resolver)",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_DNS_TIMEOUT, metavar="S",
                        help="seconds for each HTTP request and for the TXT lookup (default 5)")  # fmt: skip


async def _files(http: SafeHTTPClient, locations: list[str], token: str, seconds: float, out: TextIO) -> bool:
    found = False
    for location in locations:
        reason, detail = await check_location(http, location, token, per_location_timeout=seconds)
        if reason == "FileMatched":
            found = True
            out.write(f"  file {location}: holds the token\n")
        else:
            out.write(f"  file {location}: {detail} ({reason})\n")
    return found


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _record(dns: TxtResolver, name: str, token: str, out: TextIO) -> bool:
    lookup = await dns.txt(name)
    result = txt_result(lookup, token)
    if lookup.strings:
        shown = ", ".join(repr(s) for s in lookup.strings)
        out.write(f"  TXT {name}: {shown}" + (" (one holds the token)\n" if result.verified else "\n"))
    else:
        out.write(f"  TXT {name}: {lookup.missing or lookup.error} ({result.reason})\n")
    return result.verified


async def _verify_webhook(
    kube: KubeClient,
    http: SafeHTTPClient,
    dns: TxtResolver,
    obj: dict[str, Any],
    args: argparse.Namespace,
    out: TextIO,
) -> int:
    meta = obj["metadata"]
    try:
        spec = parse_webhook_spec(obj.get("spec") or {})
    except SpecError as exc:
        raise CommandError(f"Webhook {meta['namespace']}/{meta['name']}: {exc}") from None
    token = ((obj.get("status") or {}).get("verification") or {}).get("content")
    if not token:
        raise CommandError(
            f"Webhook {meta['namespace']}/{meta['name']} has no token yet; is the operator running?"
        )
    method = spec.verification.method
    host = urlsplit(spec.url).hostname or ""
    out.write(f"Webhook {meta['namespace']}/{meta['name']}: {spec.url} (method {method}, token {token})\n")
    by_file = await _files(http, verification_locations(spec.url, verification_file_name(token)), token,
                           args.timeout, out)  # fmt: skip
    if _is_ip(host):
        out.write(f"  TXT: none looked up, the host {host} is an IP address\n")
        by_record = False
    else:
        by_record = await _record(dns, challenge_record(host), token, out)
    covering = []
    for domain in (await kube.list(DOMAIN_PLURAL, meta["namespace"])).get("items") or []:
        entry = index_entry(domain["metadata"]["name"], domain.get("spec") or {}, domain.get("status") or {})
        if entry is not None and host_covered(
            host, entry.domain, include_subdomains=entry.include_subdomains
        ):
            state = "verified" if entry.verified else "not verified"
            out.write(f"  WebhookDomain {entry.name} ({entry.domain}) covers {host}: {state}\n")
            covering.append(entry.verified)
    proven = any(covering) or (by_record if method == "DNS" else by_file)
    how = "a verified WebhookDomain" if any(covering) else f"its {method} proof"
    out.write(f"result: {'proven by ' + how if proven else 'NOT proven (method ' + method + ')'}\n")
    return 0 if proven else 1


async def _verify_domain(
    http: SafeHTTPClient, dns: TxtResolver, obj: dict[str, Any], args: argparse.Namespace, out: TextIO
) -> int:
    meta, status = obj["metadata"], obj.get("status") or {}
    try:
        spec = parse_domain_spec(obj.get("spec") or {})
    except SpecError as exc:
        raise CommandError(f"WebhookDomain {meta['namespace']}/{meta['name']}: {exc}") from None
    token = status.get("token")
    if not token:
        raise CommandError(
            f"WebhookDomain {meta['namespace']}/{meta['name']} has no token yet; is the operator running?"
        )
    state = "verified" if is_verified(spec, status) else "not verified"
    out.write(f"WebhookDomain {meta['namespace']}/{meta['name']}: {spec.domain} (method {spec.method}, "
              f"token {token}; the cluster says {state})\n")  # fmt: skip
    if spec.method == "DNS":
        proven = await _record(dns, challenge_record(spec.domain), token, out)
    else:
        places = domain_file_locations(
            spec.domain, verification_file_name(token), allow_http=http.policy.allow_http
        )
        proven = await _files(http, places, token, args.timeout, out)
    out.write(f"result: {'proven' if proven else 'NOT proven'}\n")
    return 0 if proven else 1


async def _verify(args: argparse.Namespace, out: TextIO) -> int:
    config = kube_config(args)
    assert config is not None
    namespace = command_namespace(args, config)
    policy = EgressPolicy.from_cli(args.allow_network, args.allow_http)
    dns = TxtResolver(args.dns_nameserver, timeout=args.timeout)
    async with KubeClient(config) as kube, SafeHTTPClient(policy, max_response_bytes=64 * 1024) as http:
        if not args.domain:
            try:
                webhook = await kube.get(WEBHOOK_PLURAL, namespace, args.name)
            except NotFound:
                webhook = None
            if webhook is not None:
                return await _verify_webhook(kube, http, dns, webhook, args, out)
        try:
            domain = await kube.get(DOMAIN_PLURAL, namespace, args.name)
        except NotFound:
            what = "WebhookDomain" if args.domain else "Webhook or WebhookDomain"
            raise CommandError(f"no {what} {namespace}/{args.name}") from None
        return await _verify_domain(http, dns, domain, args, out)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    try:
        return asyncio.run(_verify(args, out or sys.stdout))
    except (CommandError, ValueError) as exc:
        return report(exc if isinstance(exc, CommandError) else CommandError(str(exc)))
