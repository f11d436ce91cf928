"""`hookline test WEBHOOK --data k=v ...`: create a WebhookTest, wait for it, print the answer."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from hookline.api import API_VERSION, BATCH_MAX_EVENTS, WEBHOOK_PLURAL, WEBHOOKTEST_KIND, WEBHOOKTEST_PLURAL
from hookline.kubecli.client import KubeClient
from hookline.kubecli.errors import EXIT_USAGE, CommandError, report
from hookline.kubecli.kube import add_connection_arguments, command_namespace, kube_config

FINISHED = ("Succeeded", "Failed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("webhook", metavar="WEBHOOK", help="name of the Webhook")
    add_connection_arguments(parser)
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an event field (repeatable); dots nest (fields.email=a@b.example); JSON values are parsed "
        '(profile=42, tags=["x"]); missing fields get sample values',
    )
    parser.add_argument("--event", metavar="TYPE", help="event type (default: the Webhook's first event)")
    parser.add_argument(
        "--batch",
        type=int,
        metavar="N",
        help="send N events of the data (each with its own id) as one batch in the batch wire format, "
        "also before spec.delivery.batch is set (default: a batch of one when the Webhook batches)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="seconds to wait (default 30)"
    )


def parse_data(pairs: Sequence[str]) -> dict[str, Any]:
    """``k=v`` pairs into an event's fields; raises CommandError naming the bad pair."""
    data: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise CommandError(
                f"--data {pair!r}: expected KEY=VALUE, e.g. --data recipient=a@b.example",
                exit_code=EXIT_USAGE,
            )
        try:
            value: Any = json.loads(raw)
            if isinstance(value, str):
                value = raw
        except ValueError:
            value = raw
        target = data
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            nested = target.setdefault(parent, {})
            if not isinstance(nested, dict):
                raise CommandError(
                    f"--data {pair!r}: {parent} is already a value, not a group of fields",
                    exit_code=EXIT_USAGE,
                )
            target = nested
        target[leaf] = value
    return data


def webhook_test(webhook: str, event: str, data: dict[str, Any], batch: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"webhook": webhook, "event": event, "data": data}
    if batch is not None:
        spec["batch"] = batch
    return {
        "apiVersion": API_VERSION,
        "kind": WEBHOOKTEST_KIND,
        "metadata": {"generateName": f"{webhook}-test-"},
        "spec": spec,
    }


def report_result(status: dict[str, Any], out: TextIO) -> None:
    response = status.get("response") or {}
    out.write(f"{status.get('phase')}: {status.get('message') or status.get('error') or ''}\n")
    if response:
        out.write(f"HTTP {response.get('statusCode')} in {response.get('durationMs')} ms\n")
        if response.get("body"):
            out.write(f"{response['body']}\n")


async def _test(args: argparse.Namespace, data: dict[str, Any], batch: int | None, out: TextIO) -> int:
    config = kube_config(args)
    assert config is not None
    namespace = command_namespace(args, config)
    async with KubeClient(config) as kube:
        webhook = await kube.get(WEBHOOK_PLURAL, namespace, args.webhook)
        events = (webhook.get("spec") or {}).get("events") or []
        event = args.event or (events[0] if events else None)
        if not event:
            raise CommandError(f"Webhook {namespace}/{args.webhook} has no events; pass --event TYPE")
        created = await kube.create(
            WEBHOOKTEST_PLURAL, namespace, webhook_test(args.webhook, event, data, batch)
        )
        name = created["metadata"]["name"]
        what = f"a batch of {batch} {event} events" if batch else f"a {event} event"
        out.write(f"WebhookTest {name}: posting {what} to {args.webhook}...\n")
        out.flush()
        deadline = time.monotonic() + args.timeout
        while True:
            current = await kube.get(WEBHOOKTEST_PLURAL, namespace, name)
            status = current.get("status") or {}
            if status.get("phase") in FINISHED:
                report_result(status, out)
                return 0 if status["phase"] == "Succeeded" else 1
            if time.monotonic() > deadline:
                raise CommandError(
                    f"no result within {args.timeout:g} s; is the hookline operator running? "
                    f"See `kubectl describe webhooktest {name} -n {namespace}`"
                )
            await asyncio.sleep(0.25)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    try:
        data = parse_data(args.data)
        batch = getattr(args, "batch", None)
        if batch is not None and not 1 <= batch <= BATCH_MAX_EVENTS:
            raise CommandError(
                f"--batch {batch}: send between 1 and {BATCH_MAX_EVENTS} events", exit_code=EXIT_USAGE
            )
        return asyncio.run(_test(args, data, batch, out or sys.stdout))
    except CommandError as exc:
        return report(exc)
