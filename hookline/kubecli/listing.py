"""`hookline list`: Webhooks and their state, with kubectl's flags (-n/-A, -l, -o, -w)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from hookline.api import COLLECTION_LABEL, DATABASE_LABEL, WEBHOOK_PLURAL
from hookline.kubecli.client import KubeClient
from hookline.kubecli.errors import EXIT_USAGE, CommandError, report
from hookline.kubecli.kube import add_connection_arguments, command_namespace, kube_config
from hookline.kubecli.output import OUTPUTS, Printer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="list in every namespace")
    parser.add_argument(
        "-l",
        "--selector",
        metavar="SELECTOR",
        help="label selector, as kubectl's (e.g. -l team=shop,tier!=dev)",
    )
    parser.add_argument("--database", help="only Webhooks scoped to this database")
    parser.add_argument("--collection", help="only Webhooks scoped to this collection (needs --database)")
    parser.add_argument(
        "-o", "--output", choices=OUTPUTS, help="wide: more columns; json/yaml: a List of the Webhooks; name"
    )
    parser.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="after the list, print each Webhook that changes (Ctrl-C stops)",
    )
    parser.add_argument(
        "--timeout", type=float, metavar="S", help="with --watch: stop after S seconds (default: never)"
    )


def label_selector(database: str | None, collection: str | None, selector: str | None = None) -> str:
    parts = [selector] if selector else []
    if database:
        parts.append(f"{DATABASE_LABEL}={database}")
    if collection:
        parts.append(f"{COLLECTION_LABEL}={collection}")
    return ",".join(parts)


def matches(item: Mapping[str, Any], database: str | None, collection: str | None) -> bool:
    """The scope labels again on our side: the operator sets them, so a Webhook it has not seen yet
    is not listed under a database it may not have."""
    labels = (item.get("metadata") or {}).get("labels") or {}
    return (not database or labels.get(DATABASE_LABEL) == database) and (
        not collection or labels.get(COLLECTION_LABEL) == collection
    )


async def _list(args: argparse.Namespace, out: TextIO) -> int:
    config = kube_config(args)
    assert config is not None
    namespace = None if args.all_namespaces else command_namespace(args, config)
    selector = label_selector(args.database, args.collection, args.selector)
    printer = Printer(args.output, args.all_namespaces, out)
    async with KubeClient(config) as kube:
        found = await kube.list(WEBHOOK_PLURAL, namespace, selector)
        items = [i for i in found.get("items") or [] if matches(i, args.database, args.collection)]
        if items or args.output in ("json", "yaml"):
            printer.print_list(items)
        elif not args.watch:
            where = f"in the {namespace} namespace" if namespace else "in any namespace"
            print(f"No Webhooks found {where}.", file=sys.stderr)
        if not args.watch:
            return 0
        version = str((found.get("metadata") or {}).get("resourceVersion") or "")
        try:
            async with asyncio.timeout(args.timeout):
                await _watch(kube, namespace, selector, version, args, printer)
        except TimeoutError:
            return 0
    return 0


async def _watch(
    kube: KubeClient,
    namespace: str | None,
    selector: str,
    version: str,
    args: argparse.Namespace,
    printer: Printer,
) -> None:
    """Print each changed Webhook until stopped; a watch the server ends is resumed where it was, and one
    that fell too far behind (410 Gone) starts over from a fresh list."""
    while True:
        async for event in kube.watch(WEBHOOK_PLURAL, namespace, version, selector):
            obj = event.get("object") or {}
            if event.get("type") == "ERROR":
                if obj.get("code") == 410:
                    fresh = await kube.list(WEBHOOK_PLURAL, namespace, selector)
                    version = str((fresh.get("metadata") or {}).get("resourceVersion") or "")
                    for item in fresh.get("items") or []:
                        if matches(item, args.database, args.collection):
                            printer.print_one(item)
                    break
                raise CommandError(f"the watch failed: {obj.get('message') or obj}")
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if event.get("type") != "BOOKMARK" and matches(obj, args.database, args.collection):
                printer.print_one(obj)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    try:
        if args.collection and not args.database:
            raise CommandError(
                "--collection needs --database (a collection belongs to a database)", exit_code=EXIT_USAGE
            )
        if args.timeout is not None and not args.watch:
            raise CommandError("--timeout goes with --watch", exit_code=EXIT_USAGE)
        return asyncio.run(_list(args, out or sys.stdout))
    except CommandError as exc:
        return report(exc)
