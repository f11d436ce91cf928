"""`hookline attempts WEBHOOK`: a Webhook's recent delivery attempts, read from the attempt log.

Answers "why did my webhook fail?" without Grafana: each failed attempt with its time, event, attempt
number, what the receiver answered (status code or error kind), how long it took, which server, and
the start of its answer; sampled successes show how many deliveries they stand for.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TextIO

import yaml

from hookline.sender.bus.attemptlog import read_attempts
from hookline.sender.cmd.natsurl import nats_auth_of
from hookline.sender.cmd.redrive import EXIT_OK, add_nats_url_argument, cli_connection, parse_since
from hookline.sender.model.deliveryhealth import AttemptRecord, one_line

EXCERPT_COLUMN = 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The attempts flags; the Webhook, its namespace and the kubeconfig flags are hookline.kubecli's."""
    parser.add_argument("--failed", action="store_true", help="only failed attempts")
    parser.add_argument(
        "--since",
        type=parse_since,
        metavar="T",
        help="only attempts at or after T: RFC 3339 time or a span back from now (2h, 3d)",
    )
    parser.add_argument("--limit", type=int, default=200, help="the newest N attempts (default %(default)s)")
    parser.add_argument(
        "-o", "--output", choices=("table", "json", "yaml"), default="table", help="default %(default)s"
    )
    add_nats_url_argument(parser)


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
    elif output == "yaml":
        yaml.safe_dump([r.to_json() for r in records], out, sort_keys=False, allow_unicode=True)
    elif not records:
        print(f"no {what} recorded", file=out)
    else:
        print(table(records), file=out)


async def main(args: argparse.Namespace, namespace: str, *, find_consumer: str | None = None) -> int:
    """`hookline attempts` once hookline.kubecli has settled the namespace and how the Webhook is found."""
    nc = await cli_connection(
        "attempts",
        namespace,
        args.webhook,
        args.nats_url,
        find_consumer=find_consumer,
        auth=nats_auth_of(args),
    )
    if isinstance(nc, int):
        return nc
    try:
        records = await read_attempts(
            nc.jetstream(),
            namespace,
            args.webhook,
            since=args.since,
            failed_only=args.failed,
            limit=args.limit,
        )
    finally:
        await nc.close()
    what = f"{'failed ' if args.failed else ''}attempts for Webhook {namespace}/{args.webhook}"
    render(records, args.output, what, sys.stdout)
    return EXIT_OK
