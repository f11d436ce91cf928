"""`hookline redrive WEBHOOK`: put a Webhook's dead letters back for delivery, to that Webhook only.

Each dead letter's event is published to `HOOKLINE_EVENTS` on the per-Webhook subject
`hookline.redrive.<namespace>.<name>`, which only that Webhook's consumer filters on (a republish on
the original subject would reach every Webhook subscribed to it again). The event keeps its id, so
the receiver sees the same `webhook-id`; the message gets a fresh `Nats-Msg-Id` so the stream's
duplicate window does not swallow it. A record is deleted only after the stream confirmed its event,
so an interrupted redrive loses nothing: running it again redrives the rest.

`--resume` first lifts the stop a 410 Gone put on the Webhook (bus.clear_gone), for when its
receiver accepts events again: the events that waited in its consumer are delivered, and the ones
that got the 410 (dead letters with reason `gone`) are redriven.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import TextIO

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from hookline.durations import EXAMPLES, DurationError, parse_duration
from hookline.sender import bus
from hookline.sender.bus.connection import NATS_URL_ENV, BusAuth
from hookline.sender.bus.deadletter import (
    StoredDeadLetter,
    count_dead_letters,
    delete_dead_letter,
    iter_dead_letters,
)
from hookline.sender.cmd.natsurl import NATS_URL_HELP, add_nats_auth_arguments, cli_nats_url, nats_auth_of
from hookline.sender.model.config import consumer_name
from hookline.sender.model.outcomes import GoneState

PROGRESS_EVERY = 100
PUBLISH_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An RFC 3339 time (`2025-06-01T12:00:00Z`) or a duration back from now (`90s`, `30m`, `2h`, `1h30m`,
    `3d`: hookline/durations.py)."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        pass
    else:
        if parsed.tzinfo is None:
            raise argparse.ArgumentTypeError(
                f"--since {text!r} has no time zone; add Z or an offset, e.g. 2025-06-01T12:00:00Z"
            )
        return parsed
    try:
        seconds = parse_duration(value)
    except DurationError:
        raise argparse.ArgumentTypeError(
            f"--since {text!r} is neither an RFC 3339 time (2025-06-01T12:00:00Z) nor a duration like 2h or "
            f"3d (whole numbers with the units d, h, m, s, e.g. {EXAMPLES})"
        ) from None
    return (now or datetime.now(UTC)) - timedelta(seconds=seconds)


def add_nats_url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nats-url",
        help=NATS_URL_HELP,
    )
    add_nats_auth_arguments(parser)  # --nats-creds, --nats-ca (a NATS with auth: the operator's user)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The redrive flags; the Webhook, its namespace and the kubeconfig flags are hookline.kubecli's."""
    parser.add_argument(
        "--since",
        type=parse_since,
        metavar="T",
        help="only dead letters stored at or after T: RFC 3339 time or a span back from now (2h, 3d)",
    )
    add_nats_url_argument(parser)
    parser.add_argument("--dry-run", action="store_true", help="list what would be redriven; change nothing")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="first resume deliveries stopped by a 410 Gone (once the receiver accepts events again)",
    )


class RedriveError(Exception):
    """Redrive cannot go on; the message says what to do."""


def _no_consumer(namespace: str, name: str, durable: str) -> RedriveError:
    return RedriveError(
        f"Webhook {namespace}/{name} has no consumer {durable} in {bus.STREAM}; is the Webhook applied "
        f"and Verified? (kubectl get wh -n {namespace} {name})"
    )


def _gone_since(state: GoneState) -> str:
    if state.since is None:
        return ""
    return " since " + datetime.fromtimestamp(state.since, UTC).isoformat(timespec="seconds")


async def resume(
    js: JetStreamContext, namespace: str, name: str, *, dry_run: bool = False, out: TextIO
) -> bool:
    """Lift a 410 Gone stop from a Webhook; returns whether it was stopped."""
    durable = consumer_name(namespace, name)
    try:
        state = await bus.read_gone(js, durable)
    except NotFoundError:
        raise _no_consumer(namespace, name, durable) from None
    if not state.gone:
        print(f"Webhook {namespace}/{name} is not stopped by a 410 Gone; nothing to resume", file=out)
        return False
    if dry_run:
        print(f"dry run: would resume Webhook {namespace}/{name} (410 Gone{_gone_since(state)})", file=out)
        return True
    await bus.clear_gone(js, durable)
    print(
        f"resumed deliveries of Webhook {namespace}/{name} (stopped by a 410 Gone{_gone_since(state)})",
        file=out,
    )
    return True


async def _check_delivery_path(js: JetStreamContext, namespace: str, name: str) -> GoneState:
    """Redriven events must land in the stream and reach this Webhook's consumer, not sit there unseen.

    Returns the Webhook's 410 Gone state (redriven events wait while it is stopped).
    """
    subject = bus.redrive_subject(namespace, name)
    try:
        stream = await js.stream_info(bus.STREAM)
    except NotFoundError:
        raise RedriveError(
            f"stream {bus.STREAM} does not exist on this NATS; start `hookline ingest` (it creates the "
            "stream) or point --nats-url at the NATS hookline uses"
        ) from None
    durable = consumer_name(namespace, name)
    try:
        consumer = await js.consumer_info(bus.STREAM, durable)
    except NotFoundError:
        raise _no_consumer(namespace, name, durable) from None
    filters = bus.filters_of(consumer.config)
    if subject not in filters:
        raise RedriveError(
            f"the consumer {durable} of Webhook {namespace}/{name} does not read {subject} (its filters: "
            f"{', '.join(filters) or 'none'}); upgrade the hookline sender so its consumer includes the "
            "redrive subject, then run redrive again. Nothing was changed"
        )
    subjects = list(stream.config.subjects or [])
    if bus.REDRIVE_STREAM_SUBJECT not in subjects:
        # Additive and idempotent: the stream also takes redriven events from now on.
        await js.update_stream(stream.config.evolve(subjects=[*subjects, bus.REDRIVE_STREAM_SUBJECT]))
    return bus.gone_of(consumer)


def _describe(stored: StoredDeadLetter) -> str:
    record = stored.record
    detail = record.last_error or (f"HTTP {record.last_status}" if record.last_status else "")
    return (
        f"{record.event_id}  {record.event.get('type', '?')}  reason={record.reason}  "
        f"attempts={record.attempts}  {detail}".rstrip()
    )


async def redrive(
    js: JetStreamContext,
    namespace: str,
    name: str,
    *,
    since: datetime | None = None,
    dry_run: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Redrive one Webhook's dead letters; returns how many were redriven (or would be, with dry_run)."""
    scope = f"Webhook {namespace}/{name}" + (f" since {since.isoformat()}" if since else "")
    total = await count_dead_letters(js, namespace, name, since)
    if total == 0:
        print(f"no dead letters for {scope}; nothing to redrive", file=out)
        return 0
    if dry_run:
        seen = 0
        async for stored in iter_dead_letters(js, namespace, name, since):
            seen += 1
            print(_describe(stored), file=out)
        print(f"dry run: would redrive {seen} dead letters of {scope}", file=out)
        return seen
    if (await _check_delivery_path(js, namespace, name)).gone:
        print(
            f"note: Webhook {namespace}/{name} is stopped by a 410 Gone; the redriven events wait until "
            "you resume it (run this again with --resume once the receiver accepts events)",
            file=out,
        )
    subject = bus.redrive_subject(namespace, name)
    run_id = uuid.uuid4().hex[:12]
    done = 0
    async for stored in iter_dead_letters(js, namespace, name, since):
        if stored.record.truncated is not None:
            print(f"skipped (its event was too large to keep whole): {_describe(stored)}", file=out)
            continue
        event = stored.record.event
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        # Fresh per run, stable within it: a publish retried in this run is still stored once.
        msg_id = f"{stored.record.event_id}~redrive-{run_id}-{stored.sequence}"
        try:
            await js.publish(
                subject,
                body,
                timeout=PUBLISH_TIMEOUT_SECONDS,
                stream=bus.STREAM,
                headers={bus.MSG_ID_HEADER: msg_id},
            )
            await delete_dead_letter(js, stored.sequence)
        except (nats.errors.Error, TimeoutError) as exc:
            raise RedriveError(
                f"stopped after redriving {done}/{total}: NATS failed ({exc or type(exc).__name__}); "
                "the rest are still dead letters: run the same command again"
            ) from exc
        done += 1
        if done % PROGRESS_EVERY == 0 or done == total:
            print(f"redriven {done}/{total}", file=out, flush=True)
    if done != total:
        print(f"redriven {done}/{total} (the others were removed or unreadable meanwhile)", file=out)
    return done


async def _connect(url: str, command: str, auth: BusAuth | None = None) -> NATS:
    """Few attempts, no reconnects: a command line tool should fail fast and say why.

    (nats-py retries the initial connect forever unless max_reconnect_attempts is positive.)
    """

    async def _quiet(_: Exception) -> None:
        return None

    return await nats.connect(
        url,
        name=f"hookline-{command}",
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        error_cb=_quiet,
        **(auth or BusAuth()).options(),  # type: ignore[arg-type]
    )


async def cli_connection(
    command: str,
    namespace: str,
    webhook: str,
    url: str | None,
    *,
    find_consumer: str | None = None,
    auth: BusAuth | None = None,
) -> NATS | int:
    """For a one-shot command about one Webhook (redrive, attempts): the NATS connection, or the
    exit code after saying on stderr what to do.

    ``find_consumer``: why the Webhook's consumer in NATS decides whether the Webhook exists (None when
    the Kubernetes API already said it does); no consumer is then "not found", exit 1."""
    try:
        durable = consumer_name(namespace, webhook)  # validates both names
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    url = cli_nats_url(url, command)  # --nats-url, else the environment, else hookline dev's
    try:
        nc = await _connect(url, command, auth)
    except Exception as exc:  # nats raises NoServersError, OSError, TimeoutError, ...
        print(
            f"error: cannot connect to NATS at {url} ({str(exc) or type(exc).__name__}); "
            f"pass --nats-url (env {NATS_URL_ENV}), or reach the cluster's NATS with "
            "kubectl port-forward svc/<nats service> 4222",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if find_consumer is None:
        return nc
    try:
        await nc.jetstream().consumer_info(bus.STREAM, durable)
    except NotFoundError:
        await nc.close()
        print(
            f"error: webhook {namespace}/{webhook} not found (no consumer {durable} in {bus.STREAM} at "
            f"{url}; checked NATS: {find_consumer}); is it applied and Verified? "
            f"(kubectl get wh -n {namespace} {webhook})",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except (nats.errors.Error, TimeoutError) as exc:
        await nc.close()
        print(f"error: NATS at {url} did not answer ({exc or type(exc).__name__})", file=sys.stderr)
        return EXIT_FAILED
    return nc


async def main(args: argparse.Namespace, namespace: str, *, find_consumer: str | None = None) -> int:
    """`hookline redrive` once hookline.kubecli has settled the namespace and how the Webhook is found."""
    nc = await cli_connection(
        "redrive",
        namespace,
        args.webhook,
        args.nats_url,
        find_consumer=find_consumer,
        auth=nats_auth_of(args),
    )
    if isinstance(nc, int):
        return nc
    js = nc.jetstream()
    try:
        if args.resume:
            await resume(js, namespace, args.webhook, dry_run=args.dry_run, out=sys.stdout)
        await redrive(js, namespace, args.webhook, since=args.since, dry_run=args.dry_run)
    except RedriveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await nc.close()
    return EXIT_OK
