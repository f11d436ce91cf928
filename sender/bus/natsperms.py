"""Who may do what on the bus (pure): the subjects of each hookline identity in the HOOKLINE account.

Every NATS subject hookline uses, and whose it is:
- `hookline.events.<type>.<db>.<coll>`: events, published by ingest into HOOKLINE_EVENTS;
  `hookline.redrive.<ns>.<name>`: dead letters put back (`hookline redrive`, the operator identity).
- `$JS.API.CONSUMER.MSG.NEXT.HOOKLINE_EVENTS.<consumer>`: a sender's pulls (feed.py), answered on its
  inbox; `$JS.ACK.HOOKLINE_EVENTS.<consumer>.>`: its acks, naks, in-progress and terms.
- `$JS.API.CONSUMER.INFO.HOOKLINE_EVENTS.<consumer>`: its consumer watch (watch.py).
- `hookline.attempts.<ns>.<name>` (HOOKLINE_ATTEMPTS): attempt records; `$KV.HOOKLINE_HEALTH.<ns>.<name>`:
  the health report (attemptlog.py).
- `hookline.dead.<ns>.<name>` (HOOKLINE_DEAD_LETTERS): dead letters (deadletter.py).
- `hookline.failed.<consumer>.<seq>` (HOOKLINE_FAILED_ATTEMPTS): failed-attempt counts (failedattempts.py).
- `$KV.hookline-consumer-floors.<consumer>` and `.recovery.<consumer>`: ack floor, recovery debt (floors.py).
- `$KV.HOOKLINE_POOLS.a.<pool>.<replica>.<consumer>` / `.r.<pool>.<replica>`: assignments, rosters.
- `$SYS.REQ.CLAIMS.UPDATE` (system account): the account JWT with its revocations (the operator).
What a least-privileged sender does NOT do (the operator does it): make streams or its consumer, make
a lost consumer again and pay its recovery debt (replay.py reads the recovery stream: every tenant's
events), record a 410 stop in its consumer's metadata (an update of the consumer could widen its filter).
"""

from __future__ import annotations

from dataclasses import dataclass

from hookline.sender.bus.natsjwt import Permissions
from hookline.sender.model.config import EVENTS_STREAM
from hookline.sender.model.subjects import encode_token

INBOX_ROOT = "_INBOX"
HEALTH_BUCKET = "HOOKLINE_HEALTH"
FLOORS_BUCKET = "hookline-consumer-floors"
POOL_BUCKET = "HOOKLINE_POOLS"
FAILED_ATTEMPTS_STREAM = "HOOKLINE_FAILED_ATTEMPTS"
DEAD_LETTER_STREAM = "HOOKLINE_DEAD_LETTERS"
ATTEMPTS_STREAM = "HOOKLINE_ATTEMPTS"
EVENTS_SUBJECTS = "hookline.events.>"


def inbox_prefix(identity: str) -> str:
    """The identity's reply subjects (nats-py `inbox_prefix`): no one else may subscribe to them."""
    return f"{INBOX_ROOT}.{identity}"


@dataclass(frozen=True)
class SenderIdentity:
    """One dedicated sender: its Webhook and its consumer on the events stream."""

    namespace: str
    name: str
    consumer: str
    stream: str = EVENTS_STREAM

    @property
    def user_name(self) -> str:
        return f"sender {self.namespace}/{self.name}"

    @property
    def inbox(self) -> str:
        return inbox_prefix(self.consumer)


def _kv_key_subjects(bucket: str, key: str) -> tuple[str, str]:
    """Put a key, and read it back (a direct get names the key in its subject)."""
    return f"$KV.{bucket}.{key}", f"$JS.API.DIRECT.GET.KV_{bucket}.$KV.{bucket}.{key}"


def sender_permissions(who: SenderIdentity) -> Permissions:
    """Pull and ack on its own consumer, its own health key, attempt-log, dead-letter and failed-attempt
    subjects and floors; nothing else (no consumer create/delete, no other consumer, no events)."""
    ns, name, consumer, stream = who.namespace, who.name, who.consumer, who.stream
    health = f"{encode_token(ns)}.{encode_token(name)}"
    pub = (
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
        f"$JS.ACK.{stream}.{consumer}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.INFO.{DEAD_LETTER_STREAM}",
        f"$JS.API.STREAM.INFO.{FAILED_ATTEMPTS_STREAM}",
        f"$JS.API.STREAM.INFO.KV_{HEALTH_BUCKET}",
        f"$JS.API.STREAM.INFO.KV_{FLOORS_BUCKET}",
        *_kv_key_subjects(HEALTH_BUCKET, health),
        *_kv_key_subjects(FLOORS_BUCKET, consumer),
        *_kv_key_subjects(FLOORS_BUCKET, f"recovery.{consumer}"),
        f"hookline.attempts.{health}",
        f"hookline.dead.{ns}.{name}",
        f"hookline.failed.{consumer}.*",
        # Its events' failed-attempt records (a direct get names the subject: its own only), and
        # dropping one once the event settled (a purge names the subject in its body: see README).
        f"$JS.API.DIRECT.GET.{FAILED_ATTEMPTS_STREAM}.hookline.failed.{consumer}.*",
        f"$JS.API.STREAM.PURGE.{FAILED_ATTEMPTS_STREAM}",
    )
    # Its consumer's JetStream advisories: the watch learns of a deletion, recreation or resume from them.
    return Permissions(pub=pub, sub=(f"{who.inbox}.>", f"$JS.EVENT.ADVISORY.CONSUMER.*.{stream}.{consumer}"))


def ingest_permissions() -> Permissions:
    """Publish events, and hear JetStream's publish acks on its own inbox; with bundles (ingest
    --bundle-events) also reserve event ids and keep bundles in HOOKLINE_EVENT_IDS (bus/reservations.py):
    write and read those subjects, and purge a refused bundle's record. Nothing else."""
    return Permissions(
        pub=(
            EVENTS_SUBJECTS,
            "hookline.ids.*",
            "hookline.bundled.*",
            "$JS.API.DIRECT.GET.HOOKLINE_EVENT_IDS.>",
            "$JS.API.STREAM.PURGE.HOOKLINE_EVENT_IDS",
        ),
        sub=(f"{inbox_prefix('ingest')}.>",),
    )


def layout_permissions() -> Permissions:
    """The streams and buckets' setup (ingest's init step): JetStream's stream and KV administration,
    no events, no consumers' messages."""
    return Permissions(
        pub=(
            "$JS.API.INFO",
            "$JS.API.STREAM.>",
            "$JS.API.CONSUMER.INFO.>",
            "$JS.API.CONSUMER.CREATE.>",
            "$JS.API.CONSUMER.DURABLE.CREATE.>",
            "$JS.API.CONSUMER.DELETE.>",
            "$KV.>",
        ),
        sub=(f"{inbox_prefix('layout')}.>",),
    )


def operator_permissions() -> Permissions:
    """The control plane: streams, consumers, KV buckets, redrive, and the backlog moves (it fetches a
    stuck Webhook's oldest events through its consumer into dead letters: sender/bus/backlog.py). It
    publishes no events. It can make consumers, so it could read events: it is trusted as the
    issuer of every user is."""
    return Permissions(
        pub=("$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$KV.>", "hookline.redrive.>", "hookline.dead.>"),
        sub=(f"{inbox_prefix('operator')}.>",),
    )


def pool_permissions(pool: str) -> Permissions:
    """A pool replica: pull and ack on the Webhooks' consumers it is given (their names are not known
    when it is minted: every events consumer), their health, attempt, dead-letter and failed subjects,
    and its own prefix of the pools bucket; no events published, no consumer made or deleted."""
    stream = EVENTS_STREAM
    return Permissions(
        pub=(
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
            f"$JS.ACK.{stream}.>",
            f"$JS.API.CONSUMER.INFO.{stream}.*",
            "$JS.API.STREAM.INFO.*",
            # Its pool's rosters (r.<pool>.<replica>) written, its assignments (a.<pool>.<replica>.>) read.
            f"$KV.{POOL_BUCKET}.r.{pool}.*",
            f"$JS.API.DIRECT.GET.KV_{POOL_BUCKET}.$KV.{POOL_BUCKET}.r.{pool}.*",
            f"$JS.API.DIRECT.GET.KV_{POOL_BUCKET}.$KV.{POOL_BUCKET}.a.{pool}.>",
            f"$JS.API.DIRECT.GET.KV_{POOL_BUCKET}.$KV.{POOL_BUCKET}.g.>",  # namespaces' egress grants, read
            f"$JS.API.CONSUMER.INFO.KV_{POOL_BUCKET}.*",  # its watches' ordered consumers
            # Its watch of the bucket (an ordered consumer; the create subject need not name the filter).
            f"$JS.API.CONSUMER.CREATE.KV_{POOL_BUCKET}",
            f"$JS.API.CONSUMER.CREATE.KV_{POOL_BUCKET}.>",
            f"$JS.FC.KV_{POOL_BUCKET}.>",
            f"$JS.API.CONSUMER.DELETE.KV_{POOL_BUCKET}.*",
            f"$KV.{HEALTH_BUCKET}.>",
            f"$JS.API.DIRECT.GET.KV_{HEALTH_BUCKET}.>",
            f"$KV.{FLOORS_BUCKET}.>",
            f"$JS.API.DIRECT.GET.KV_{FLOORS_BUCKET}.>",
            "hookline.attempts.>",
            "hookline.dead.>",
            "hookline.failed.>",
            f"$JS.API.STREAM.MSG.GET.{FAILED_ATTEMPTS_STREAM}",
            f"$JS.API.DIRECT.GET.{FAILED_ATTEMPTS_STREAM}.>",
            f"$JS.API.STREAM.PURGE.{FAILED_ATTEMPTS_STREAM}",
        ),
        # "*": any pool's replica; the advisories of its Webhooks' consumers (the engines' watch).
        sub=(f"{inbox_prefix('pool.' + pool)}.>", f"$JS.EVENT.ADVISORY.CONSUMER.*.{stream}.*"),
    )


def system_permissions() -> Permissions:
    """The operator's user in the system account: push the account JWT (its revocations), nothing else."""
    return Permissions(
        pub=(
            "$SYS.REQ.CLAIMS.UPDATE",
            "$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE",
            "$SYS.REQ.ACCOUNT.*.CLAIMS.LOOKUP",
        ),
        sub=(f"{inbox_prefix('system')}.>",),
    )
