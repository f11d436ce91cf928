"""`hookline list` output as kubectl prints it: a table (wide with -o wide), a List in JSON or YAML, names."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import yaml

from hookline.api import API_VERSION, GROUP, WEBHOOK_KIND, ConditionType, SenderMode
from hookline.durations import format_duration
from hookline.operator.rules.status import find
from hookline.timestamps import parse_rfc3339

OUTPUTS = ("wide", "json", "yaml", "name")
HEADER = ["NAME", "URL", "EVENTS", "DATABASE", "COLLECTION", "VERIFIED", "READY", "SENDER"]
WIDE_HEADER = ["DELIVERING", "PENDING", "LAST-SUCCESS", "AGE"]


def webhook_object(item: Mapping[str, Any]) -> dict[str, Any]:
    """The object as `kubectl get -o json` shows it: apiVersion and kind first."""
    return {"apiVersion": item.get("apiVersion", API_VERSION), "kind": item.get("kind", WEBHOOK_KIND), **item}


def as_list(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """kubectl's List of the objects."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [webhook_object(i) for i in items],
        "metadata": {"resourceVersion": ""},
    }


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


def age(timestamp: str | None, now: float | None = None) -> str:
    """How long ago, in the two largest units (``3d4h``, ``15m``), as kubectl's AGE column."""
    if not timestamp:
        return "-"
    try:
        seconds = (now or time.time()) - parse_rfc3339(timestamp).timestamp()
    except ValueError:
        return "-"
    spelled = format_duration(max(0, seconds))
    units = [i for i, ch in enumerate(spelled) if ch.isalpha()]
    return spelled[: units[1] + 1] if len(units) > 1 else spelled


def row(item: Mapping[str, Any], all_namespaces: bool, wide: bool) -> list[str]:
    spec, status = item.get("spec") or {}, item.get("status") or {}
    meta = item.get("metadata") or {}
    cells = [
        meta.get("name", ""),
        spec.get("url", ""),
        ",".join(spec.get("events") or []),
        spec.get("database") or "-",
        spec.get("collection") or "-",
        _condition(item, ConditionType.VERIFIED),
        _condition(item, ConditionType.READY),
        sender_cell(item),
    ]
    if wide:
        delivery = status.get("delivery") or {}
        delivering = find(status.get("conditions"), ConditionType.DELIVERING)
        pending = delivery.get("pending")
        cells += [
            (delivering or {}).get("reason") or "-",
            "-" if pending is None else str(pending),
            delivery.get("lastSuccessAt") or "-",
            age(meta.get("creationTimestamp")),
        ]
    return ([meta.get("namespace", "")] if all_namespaces else []) + cells


class Printer:
    """Prints a list, then (with --watch) one object at a time, in one output format."""

    def __init__(self, output: str | None, all_namespaces: bool, out: TextIO) -> None:
        self.output, self.all_namespaces, self.out = output, all_namespaces, out
        self.widths: list[int] = []

    def header(self) -> list[str]:
        wide = HEADER + WIDE_HEADER if self.output == "wide" else HEADER
        return (["NAMESPACE"] if self.all_namespaces else []) + wide

    def print_list(self, items: Sequence[Mapping[str, Any]]) -> None:
        items = sorted(items, key=lambda i: (i["metadata"].get("namespace", ""), i["metadata"]["name"]))
        if self.output == "json":
            self._write(json.dumps(as_list(items), indent=4, ensure_ascii=False) + "\n")
        elif self.output == "yaml":
            self._write(yaml.safe_dump(as_list(items), sort_keys=False, allow_unicode=True))
        elif self.output == "name":
            for item in items:
                self.print_one(item)
        else:
            table = [self.header()] + [row(i, self.all_namespaces, self.output == "wide") for i in items]
            self.widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
            for cells in table:
                self._row(cells)

    def print_one(self, item: Mapping[str, Any]) -> None:
        """One object that changed (a watch event)."""
        if self.output == "json":
            self._write(json.dumps(webhook_object(item), indent=4, ensure_ascii=False) + "\n")
        elif self.output == "yaml":
            self._write("---\n" + yaml.safe_dump(webhook_object(item), sort_keys=False, allow_unicode=True))
        elif self.output == "name":
            self._write(f"{WEBHOOK_KIND.lower()}.{GROUP}/{item['metadata']['name']}\n")
        else:
            if not self.widths:
                self.widths = [len(h) for h in self.header()]
                self._row(self.header())
            self._row(row(item, self.all_namespaces, self.output == "wide"))

    def _row(self, cells: list[str]) -> None:
        padded = (c.ljust(w) for c, w in zip(cells, self.widths, strict=True))
        self._write("   ".join(padded).rstrip() + "\n")

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
