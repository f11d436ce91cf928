"""Ingest's limits and timeouts: one frozen value the command builds from its flags and passes to the
handler, so a test sets a limit by passing settings, not by patching a module.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_INGEST_SETTINGS", "IngestSettings"]


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """What ingest accepts and how long it waits; the defaults are the flags' defaults."""

    max_body_bytes: int = 1024 * 1024  # --max-body-bytes; also the bound of an inflated body
    publish_timeout_seconds: float = 5.0  # --publish-timeout: NATS confirms a request's events within
    body_timeout_seconds: float = 10.0  # --body-timeout: a body arrives within, else 408
    # --header-timeout: a request's headers arrive within, and a connection idles at most this long
    header_timeout_seconds: float = 10.0
    max_connections: int = 1000  # --max-connections: more are answered 503 and closed
    max_events_per_request: int = 10_000
    # After JetStream refused a publish (stream full), /readyz stays false this long unless a publish
    # succeeds first; a producer is told to come back after `retry_after_seconds`.
    store_refusal_hold_seconds: float = 5.0
    retry_after_seconds: int = 2
    # Bodies larger than this (or compressed) are inflated and parsed in a worker process at idle CPU
    # priority when ingest has one (heavy.py), so costly requests never hold up the event loop that
    # answers everyone else; at most `max_heavy_waiting` of them are admitted at once, counted before
    # their body is read (more get 503 with Retry-After), and each is answered within
    # `heavy_timeout_seconds` (else the same 503).
    heavy_body_bytes: int = 64 * 1024
    max_heavy_waiting: int = 8
    heavy_timeout_seconds: float = 10.0
    # What heavy bodies may cost the event loop: their bytes read per second, and at once. A heavy
    # body waits in its slot for its bytes; one that would wait past heavy_timeout_seconds gets the
    # same 503 before it is read.
    # 16 MiB/s is 16 full-size bodies (up to 160,000 events) per second.
    heavy_bytes_per_second: int = 16 * 1024 * 1024
    heavy_burst_bytes: int = 4 * 1024 * 1024
    # --bundle-events: events of one request and subject stored together, up to this many per message
    # (bundled.py; 1: each event its own message)
    bundle_events: int = 1


DEFAULT_INGEST_SETTINGS = IngestSettings()
