"""`hookline attempts WEBHOOK`: a Webhook's recent delivery attempts, read from the attempt log.

Answers "why did my webhook fail?" without Grafana: each failed attempt with its time, event, attempt
number, what the receiver answered (status code or error kind), how long it took, which server, and
the start of its answer; sampled successes show how many deliveries they stand for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from hookline.sender.bus.attemptlog import read_attempts
from hookline.sender.bus.connection import DEFAULT_NATS_URL, NATS_URL_ENV
from hookline.sender.cmd.redrive import EXIT_OK, NAMESPACE_ENV, cli_connection, parse_since
from hookline.sender.model.deliveryhealth import AttemptRecord, one_line

EXCERPT_COLUMN = 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("webhook", metavar="WEBHOOK", help="name of the Webhook")
    parser.add_argument(
        "-n",
        "--namespace",
        default=os.environ.get(NAMESPACE_ENV, "default"),
        help=f"the Webhook's namespace (env {NAMESPACE_ENV}; default %(default)s)",
    )
    parser.add_argument("--failed", action="store_true", help="only failed attempts")
    parser.add_argument(
        "--since",
        type=parse_since,
        metavar="T",
        help="only attempts at or after T: RFC 3339 time or a span back from now (2h, 3d)",
    )
    parser.add_argument("--limit", type=int, default=200, help="the newest N attempts (default %(default)s)")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.add_argument(
        "--nats-url",
        default=os.environ.get(NATS_URL_ENV, DEFAULT_NATS_URL),
        help=f"NATS server URL (env {NATS_URL_ENV}; default %(default)s)",
    )


def table(records: Sequence[AttemptRecord]) -> str:
    """Aligned columns, oldest first; the answer cut to one short line."""
    head = ("TIME", "EVENT", "TYPE", "ATTEMPT", "OUTCOME", "MS", "RECEIVER", "ANSWER")
    rows = [head]
    for r in records:
        outcome = r.outcome if not r.ok or r.successes == 1 else f"{r.outcome} (x{r.successes})"
        answer = one_line(r.response, EXCERPT_COLUMN)
        row = (r.to_json()["at"], r.event_id, r.event_type, str(r.attempt), outcome, str(r.duration_ms))
        rows.append((*row, r.receiver, answer))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    )


def render(records: Sequence[AttemptRecord], output: str, what: str, out: TextIO) -> None:
    if output == "json":
        json.dump([r.to_json() for r in records], out, indent=2, ensure_ascii=False)
        out.write("\n")
    elif not records:
        print(f"no {what} recorded", file=out)
    else:
        print(table(records), file=out)


async def _main(args: argparse.Namespace) -> int:
    nc = await cli_connection("attempts", args.namespace, args.webhook, args.nats_url)
    if isinstance(nc, int):
        return nc
    try:
        records = await read_attempts(
            nc.jetstream(),
            args.namespace,
            args.webhook,
            since=args.since,
            failed_only=args.failed,
            limit=args.limit,
        )
    finally:
        await nc.close()
    what = f"{'failed ' if args.failed else ''}attempts for Webhook {args.namespace}/{args.webhook}"
    render(records, args.output, what, sys.stdout)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_main(args))
