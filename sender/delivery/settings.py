"""The engine's own timings and bounds (not the Webhook's spec): one frozen value a host passes to
the supervisor and on to every engine, so a test shortens a wait by passing settings, not by patching
a module.
"""

from __future__ import annotations

from dataclasses import dataclass

from hookline.sender import bus

__all__ = ["DEFAULT_ENGINE_SETTINGS", "EngineSettings"]


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How an engine waits, retries its own work and bounds what it holds; the defaults are production's."""

    # A dead letter NATS did not confirm, or an unexpected error: the event comes back after this long.
    redeliver_after_failure_seconds: float = 5.0
    # Tries to store one dead letter before the engine logs an error, counts
    # hookline_dead_letter_failures_total and keeps the event for `dead_letter_kept_delay_seconds`.
    dead_letter_max_tries: int = 5
    dead_letter_kept_delay_seconds: float = 3600.0
    # The stream's count of this Webhook's dead letters is read again this often (a redrive lowers
    # it); in between the engine counts its own.
    dead_letter_recount_seconds: float = 600.0
    # Batches: messages in hand at most (they count as ack-pending, next to the retries that wait).
    batch_feed_limit: int = bus.MAX_ACK_PENDING // 2
    # How long the first returning event of a failed batch waits for the others (at least maxWait).
    regroup_wait_seconds: float = 1.0
    # Failed-attempt counts an engine remembers (ledger.py); an event it forgot is read from NATS.
    failed_attempts_remembered: int = 10_000
    # The consumer is looked at this often (pending events, a stop or resume made elsewhere, a lost
    # consumer); a pull answered "409 Consumer Deleted" or a stop of this engine looks at once. Each look
    # also reports events read ahead that waited over a third of ack_wait (>= 10 s) in progress, so
    # this must stay well below that.
    watch_interval_seconds: float = 5.0
    # A look that finds the consumer idle and healthy makes the next one this far away (jittered down to
    # 0.8 of it, the first after a start spread over all of it); its advisories, an event or a reconnect
    # bring the watch back at once (watch.py).
    watch_idle_interval_seconds: float = 600.0
    # The same for a Webhook whose pending events only wait out their retry delays (watch.py).
    watch_steady_interval_seconds: float = 60.0
    # A pull request lives this long (heartbeats every 5 s tell a lost one): a quiet engine asks again
    # this often, its one NATS request besides the idle watch's (the first after a start expires
    # earlier, spread, so 10,000 engines started together do not ask together ever after).
    pull_expires_seconds: float = 600.0
    # False for a sender with least-privilege NATS credentials (natsperms.sender_permissions): it waits
    # for the operator to make its consumer, neither makes nor remakes it, pays no recovery debt, and
    # keeps a 410 stop in its health report instead of the consumer's metadata.
    manage_consumer: bool = True


DEFAULT_ENGINE_SETTINGS = EngineSettings()
