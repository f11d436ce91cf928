"""The NATS JetStream adapter, one role per module; this package face re-exports what callers use
as `bus.X` (`bus.connect`, `bus.STREAM`, `bus.ensure_consumer`, ...).

  connection   connect (reconnecting forever), close_quietly, BusUnavailable / StoreRefused,
               the default NATS URL and its environment variable
  replicas     how many copies of a stream or bucket: the bound, and moving an existing one
  layout       the events and dead-letter streams, the per-Webhook consumer (spec, config,
               ensure_consumer, delete_consumer, whether it needs an update)
  buckets      key-value bucket handles, opened once per connection and dropped when a use fails
  floors       the consumers' ack floors (key-value bucket), from which a lost consumer is recreated,
               and what a recreated consumer is still owed (RecoveryDebt)
  recovery     the recovery stream: a bounded mirror of the events stream (interest retention)
  replay       paying a recreated consumer's debt from the recovery stream, counting what is lost
  stoprecord   the 410 Gone / circuit-breaker stop, kept on the consumer's metadata
  publish      publishing events, each settled by the server's answer
  feed         MessageFeed, the continuous pull from one consumer; stored_at, when the stream
               stored a message (or a bundle's member)
  replymeta    what a message's reply subject says (sequences, delivery count, stored time), read
               without nats-py's costs
  bundles      the events of a bundle (several events in one message) handed out one by one, and
               the bundle's message settled once they all are; event_key names an event either way
  reservations event ids reserved for the duplicate window, and bundles kept, for an ingest that
               bundles (imported by its own path)
  outbox       a connection's acks and attempt records, held a moment and written together
  deadletter   dead letters: records, publish, read, redrive support
  failedattempts  each event's failed attempts as receivers answered them (imported by its own path)
  attemptlog   the attempt log stream and the health bucket (records: sender/model/deliveryhealth.py)
  poolproto    the sender-pool protocol shared by the operator and pool replicas
  natsserver   a local nats-server for dev mode and tests

The modules import each other directly, never this package face; deadletter, attemptlog, poolproto,
replay and natsserver are imported by their own path.
"""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.js import api

from hookline.sender.bus.bundles import BundleBook, BundleMember, event_key
from hookline.sender.bus.connection import BusUnavailable, StoreRefused, close_quietly, connect
from hookline.sender.bus.feed import MessageFeed, stored_at
from hookline.sender.bus.floors import (
    FLOORS_BUCKET,
    RecoveryDebt,
    ensure_floors_bucket,
    floor_of,
    forget_floor,
    read_debt,
    read_floor,
    record_floor,
)
from hookline.sender.bus.layout import (
    ACK_WAIT_MARGIN_SECONDS,
    DEAD_LETTER_STREAM,
    DEFAULT_DUPLICATE_WINDOW_SECONDS,
    DEFAULT_MAX_CONSUMERS,
    DEFAULT_RETENTION_SECONDS,
    DEFAULT_STREAM_RETENTION,
    MAX_ACK_PENDING,
    REDRIVE_STREAM_SUBJECT,
    SERVER_DEFAULT_MAX_CONSUMERS,
    STREAM,
    STREAM_RETENTIONS,
    ConsumerSpec,
    ack_wait_seconds,
    consumer_config,
    consumer_needs_update,
    consumer_spec,
    dead_letter_subject,
    delete_consumer,
    effective_max_consumers,
    ensure_consumer,
    ensure_dead_letter_stream,
    ensure_stream,
    filters_of,
    pending_of,
    redrive_subject,
    stream_changes,
    stream_config,
)
from hookline.sender.bus.outbox import Outbox, outbox_of
from hookline.sender.bus.publish import MSG_ID_HEADER, max_event_bytes, publish_encoded, publish_events
from hookline.sender.bus.recovery import (
    DEFAULT_RECOVERY_MAX_BYTES,
    DEFAULT_RECOVERY_WINDOW_SECONDS,
    RECOVERY_STREAM,
    ensure_recovery_stream,
)
from hookline.sender.bus.replicas import DEFAULT_REPLICAS, MAX_REPLICAS, check_replicas, ensure_replicas
from hookline.sender.bus.stoprecord import clear_gone, gone_metadata, gone_of, mark_gone, read_gone

__all__ = [
    "ACK_WAIT_MARGIN_SECONDS",
    "DEAD_LETTER_STREAM",
    "DEFAULT_DUPLICATE_WINDOW_SECONDS",
    "DEFAULT_MAX_CONSUMERS",
    "DEFAULT_RECOVERY_MAX_BYTES",
    "DEFAULT_RECOVERY_WINDOW_SECONDS",
    "DEFAULT_REPLICAS",
    "DEFAULT_RETENTION_SECONDS",
    "DEFAULT_STREAM_RETENTION",
    "FLOORS_BUCKET",
    "MAX_ACK_PENDING",
    "MAX_REPLICAS",
    "MSG_ID_HEADER",
    "NATS",
    "RECOVERY_STREAM",
    "REDRIVE_STREAM_SUBJECT",
    "SERVER_DEFAULT_MAX_CONSUMERS",
    "STREAM",
    "STREAM_RETENTIONS",
    "BundleBook",
    "BundleMember",
    "BusUnavailable",
    "ConsumerSpec",
    "MessageFeed",
    "Outbox",
    "RecoveryDebt",
    "StoreRefused",
    "ack_wait_seconds",
    "api",
    "check_replicas",
    "clear_gone",
    "close_quietly",
    "connect",
    "consumer_config",
    "consumer_needs_update",
    "consumer_spec",
    "dead_letter_subject",
    "delete_consumer",
    "effective_max_consumers",
    "ensure_consumer",
    "ensure_dead_letter_stream",
    "ensure_floors_bucket",
    "ensure_recovery_stream",
    "ensure_replicas",
    "ensure_stream",
    "event_key",
    "filters_of",
    "floor_of",
    "forget_floor",
    "gone_metadata",
    "gone_of",
    "mark_gone",
    "max_event_bytes",
    "outbox_of",
    "pending_of",
    "publish_encoded",
    "publish_events",
    "read_debt",
    "read_floor",
    "read_gone",
    "record_floor",
    "redrive_subject",
    "stored_at",
    "stream_changes",
    "stream_config",
]
