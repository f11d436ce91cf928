"""`hookline list [--database D] [--collection C] [-n NS | -A]`: Webhooks and their state."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from kubernetes import client

from hookline.api import (
    COLLECTION_LABEL,
    DATABASE_LABEL,
    GROUP,
    VERSION,
    WEBHOOK_PLURAL,
    ConditionType,
    SenderMode,
)
from hookline.kubecli.kube import CommandError, add_connection_arguments, api_error, connect
from hookline.operator.rules.status import find


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="list in every namespace")
    parser.add_argument("--database", help="only Webhooks scoped to this database")
    parser.add_argument("--collection", help="only Webhooks scoped to this collection (needs --database)")


def label_selector(database: str | None, collection: str | None) -> str:
    parts = []
    if database:
        parts.append(f"{DATABASE_LABEL}={database}")
    if collection:
        parts.append(f"{COLLECTION_LABEL}={collection}")
    return ",".join(parts)


def matches(item: Mapping[str, Any], database: str | None, collection: str | None) -> bool:
    labels = (item.get("metadata") or {}).get("labels") or {}
    return (not database or labels.get(DATABASE_LABEL) == database) and (
        not collection or labels.get(COLLECTION_LABEL) == collection
    )


def _condition(item: Mapping[str, Any], type_: str) -> str:
    condition = find((item.get("status") or {}).get("conditions"), type_)
    if condition is None:
        return "-"
    reason = condition.get("reason")
    return f"{condition.get('status')} ({reason})" if reason else str(condition.get("status"))


def sender_cell(item: Mapping[str, Any]) -> str:
    """Where the Webhook's engine runs: ``pool <name>/<replica>``, ``deployment <name>``, or ``-``."""
    sender = (item.get("status") or {}).get("sender") or {}
    if sender.get("mode") == SenderMode.POOL:
        replica = sender.get("replica")
        return f"pool {sender.get('pool')}/{'-' if replica is None else replica}"
    return f"deployment {sender['deployment']}" if sender.get("deployment") else "-"


def rows(items: Sequence[Mapping[str, Any]], all_namespaces: bool) -> list[list[str]]:
    header = ["NAME", "URL", "EVENTS", "DATABASE", "COLLECTION", "VERIFIED", "READY", "SENDER"]
    table = [(["NAMESPACE"] if all_namespaces else []) + header]
    for item in sorted(items, key=lambda i: (i["metadata"].get("namespace", ""), i["metadata"]["name"])):
        spec = item.get("spec") or {}
        row = [
            item["metadata"]["name"],
            spec.get("url", ""),
            ",".join(spec.get("events") or []),
            spec.get("database") or "-",
            spec.get("collection") or "-",
            _condition(item, ConditionType.VERIFIED),
            _condition(item, ConditionType.READY),
            sender_cell(item),
        ]
        table.append(([item["metadata"].get("namespace", "")] if all_namespaces else []) + row)
    return table


def render(table: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for row in table:
        out.write("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        if args.collection and not args.database:
            raise CommandError("--collection needs --database (a collection belongs to a database)")
        kube = connect(args)
        selector = label_selector(args.database, args.collection)
        try:
            if args.all_namespaces:
                found = kube.api.list_cluster_custom_object(
                    GROUP, VERSION, WEBHOOK_PLURAL, label_selector=selector
                )
            else:
                found = kube.api.list_namespaced_custom_object(
                    GROUP, VERSION, kube.namespace, WEBHOOK_PLURAL, label_selector=selector
                )
        except client.ApiException as exc:
            raise api_error(exc, "listing Webhooks") from None
    except CommandError as exc:
        print(f"hookline list: {exc}", file=sys.stderr)
        return 2
    items = [i for i in found.get("items", []) if matches(i, args.database, args.collection)]
    if not items:
        where = "any namespace" if args.all_namespaces else f"namespace {kube.namespace}"
        print(f"No Webhooks found in {where}.", file=out)
        return 0
    render(rows(items, args.all_namespaces), out)
    return 0
