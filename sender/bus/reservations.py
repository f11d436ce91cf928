"""Event ids reserved for the duplicate window, so that an ingest storing bundles (several events in one
message, model/bundles.py) keeps the promise "the same event id twice within the window is one
event": JetStream de-duplicates messages by `Nats-Msg-Id`, and a bundle's id is not its events' ids.

Stream `HOOKLINE_EVENT_IDS` (limits retention, one message per subject, kept for the events stream's
duplicate window):

- `hookline.ids.<sha256 of the event id>`: the reservation, written only if the subject is empty
  (`Nats-Expected-Last-Subject-Sequence: 0`); its body names the holder: `plain` (the event was
  published as a message of its own, under its id) or the id of the bundle it went into;
- `hookline.bundled.<bundle id>`: the bundle's message as it was (or is about to be) published,
  written before the bundle, removed when the bundle was refused for certain.

A request that finds one of its ids reserved settles it by publishing what the holder published
again under the holder's message id: JetStream then says "duplicate" (it was stored) or stores it now
(it was not: its publish had ended unknown). A reservation whose bundle left no record was never
published, and is taken over. See ingest/bundled.py for the whole sequence.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from hookline.sender.bus.connection import BusUnavailable, StoreRefused
from hookline.sender.bus.layout import DEFAULT_DUPLICATE_WINDOW_SECONDS
from hookline.sender.bus.publish import publisher_for
from hookline.sender.bus.replicas import DEFAULT_REPLICAS, check_replicas, ensure_replicas
from hookline.sender.model.bundles import BUNDLE_HEADER

__all__ = [
    "IDS_STREAM",
    "PLAIN",
    "IdReservations",
    "KeptBundle",
    "Reservation",
    "ensure_ids_stream",
]

IDS_STREAM = "HOOKLINE_EVENT_IDS"
IDS_PREFIX = "hookline.ids"
BUNDLED_PREFIX = "hookline.bundled"
PLAIN = "plain"  # the holder of an event published as a message of its own
SUBJECT_HEADER = "Hookline-Subject"
_WRONG_LAST_SEQUENCE = 10071  # JetStream's err_code for a failed Nats-Expected-Last-Subject-Sequence


def id_subject(event_id: str) -> str:
    """The reservation's subject: event ids are free text, a subject token is not."""
    return f"{IDS_PREFIX}.{hashlib.sha256(event_id.encode()).hexdigest()[:40]}"


def ids_stream_config(
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW_SECONDS, replicas: int = DEFAULT_REPLICAS
) -> api.StreamConfig:
    return api.StreamConfig(
        name=IDS_STREAM,
        subjects=[f"{IDS_PREFIX}.*", f"{BUNDLED_PREFIX}.*"],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        max_msgs_per_subject=1,
        max_age=float(duplicate_window),
        duplicate_window=float(duplicate_window),
        allow_direct=True,
        num_replicas=check_replicas(replicas),
    )


async def ensure_ids_stream(
    js: JetStreamContext, duplicate_window: float = DEFAULT_DUPLICATE_WINDOW_SECONDS, replicas: int = 1
) -> api.StreamInfo:
    """The stream, made when absent, its window brought to the events stream's and its replicas to
    ingest's `--nats-replicas` (as the other streams are)."""
    try:
        info = await js.stream_info(IDS_STREAM)
    except NotFoundError:
        return await js.add_stream(ids_stream_config(duplicate_window, replicas))
    if info.config.max_age != float(duplicate_window):
        info = await js.update_stream(
            info.config.evolve(max_age=float(duplicate_window), duplicate_window=float(duplicate_window))
        )
    if await ensure_replicas(js, IDS_STREAM, replicas):
        info = await js.stream_info(IDS_STREAM)
    return info


@dataclass(frozen=True, slots=True)
class Reservation:
    """An id's reservation: `ours`, or held by `holder` (PLAIN or a bundle id) at `sequence`."""

    ours: bool
    holder: str = ""
    sequence: int = 0


@dataclass(frozen=True, slots=True)
class KeptBundle:
    """A bundle's message as it was published: its subject, payload and event count."""

    subject: str
    payload: bytes
    count: int


OURS = Reservation(True)


class IdReservations:
    """The reservations and kept bundles; every call raises BusUnavailable when NATS cannot say."""

    def __init__(self, js: JetStreamContext, timeout: float = 5.0) -> None:
        self.js = js
        self.timeout = timeout

    async def reserve(self, event_id: str, holder: str, after: int = 0) -> Reservation:
        """Reserve `event_id` for `holder` if nobody holds it (`after`: take over the stale
        reservation at that sequence). No message id: nats-server would remember each for the window
        (~100 bytes of its memory per event); a repeat of this very write finds its own holder."""
        subject = id_subject(event_id)
        headers = {"Nats-Expected-Last-Subject-Sequence": str(after)}
        try:
            await self.js.publish(
                subject, holder.encode(), stream=IDS_STREAM, timeout=self.timeout, headers=headers
            )
            return OURS
        except APIError as exc:
            if exc.err_code != _WRONG_LAST_SEQUENCE:
                raise BusUnavailable(f"event id not reserved: {exc.description or exc}") from exc
        except (nats.errors.Error, TimeoutError, NoStreamResponseError) as exc:
            raise BusUnavailable(f"event id not reserved: {exc or type(exc).__name__}") from exc
        return await self._holder(subject, holder)

    async def reserve_all(
        self, nc: NATS, wanted: Sequence[tuple[str, str]]
    ) -> list[Reservation | BusUnavailable]:
        """`reserve` for many (event id, holder) pairs at once, through the connection's publisher (one
        write each, answers awaited together): what each reservation is, or why it is unknown."""
        publisher = publisher_for(nc)
        await publisher.start()
        futures: list[asyncio.Future[dict[str, object]] | BusUnavailable] = []
        for event_id, holder in wanted:
            subject = id_subject(event_id)
            try:
                futures.append(
                    await publisher.publish(
                        subject,
                        holder.encode(),
                        None,  # no message id: a repeat of this write finds its own holder (`_holder`)
                        {"Nats-Expected-Last-Subject-Sequence": "0"},
                        stream=IDS_STREAM,
                    )
                )
            except nats.errors.Error as exc:
                futures.append(BusUnavailable(f"event id not reserved: {exc or type(exc).__name__}"))
        waiting = [f for f in futures if isinstance(f, asyncio.Future)]
        if waiting:
            await asyncio.wait(waiting, timeout=self.timeout)
        return list(
            await asyncio.gather(
                *(
                    self._answer(f, event_id, holder)
                    for f, (event_id, holder) in zip(futures, wanted, strict=True)
                )
            )
        )

    async def _answer(
        self, future: asyncio.Future[dict[str, object]] | BusUnavailable, event_id: str, holder: str
    ) -> Reservation | BusUnavailable:
        if isinstance(future, BusUnavailable):
            return future
        if not future.done():
            future.cancel()
            return BusUnavailable(f"NATS did not confirm the event id's reservation within {self.timeout:g}s")
        error = future.exception()
        if error is None:
            return OURS
        if not isinstance(error, StoreRefused) or error.err_code != _WRONG_LAST_SEQUENCE:
            return error if isinstance(error, BusUnavailable) else BusUnavailable(str(error))
        try:
            return await self._holder(id_subject(event_id), holder)
        except BusUnavailable as exc:
            return exc

    async def _holder(self, subject: str, holder: str) -> Reservation:
        """Who holds a reservation found taken (this `holder` itself: a repeat of its own write)."""
        held = await self._last(subject)
        if held is None:  # expired in between: held by nobody (the caller takes it over from 0)
            return Reservation(False, "", 0)
        holder_now = (held.data or b"").decode("utf-8", "replace")
        return OURS if holder_now == holder else Reservation(False, holder_now, int(held.seq or 0))

    async def keep_bundle(self, bundle_id: str, kept: KeptBundle) -> None:
        headers = {
            SUBJECT_HEADER: kept.subject,
            BUNDLE_HEADER: str(kept.count),
        }
        try:
            await self.js.publish(
                f"{BUNDLED_PREFIX}.{bundle_id}",
                kept.payload,
                stream=IDS_STREAM,
                timeout=self.timeout,
                headers=headers,
            )
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"bundle not kept: {exc or type(exc).__name__}") from exc

    async def kept_bundle(self, bundle_id: str) -> KeptBundle | None:
        """The bundle as it was published; None when none was kept (or it expired, or was refused)."""
        held = await self._last(f"{BUNDLED_PREFIX}.{bundle_id}")
        if held is None:
            return None
        headers = held.headers or {}
        try:
            return KeptBundle(headers[SUBJECT_HEADER], held.data or b"", int(headers[BUNDLE_HEADER]))
        except (KeyError, ValueError):
            return None

    async def drop_bundle(self, bundle_id: str) -> None:
        try:
            await self.js.purge_stream(IDS_STREAM, subject=f"{BUNDLED_PREFIX}.{bundle_id}")
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"bundle record not dropped: {exc or type(exc).__name__}") from exc

    async def _last(self, subject: str):  # noqa: ANN202 - nats-py's RawStreamMsg
        try:
            return await asyncio.wait_for(
                self.js.get_last_msg(IDS_STREAM, subject, direct=True), self.timeout
            )
        except NotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"event id reservation not readable: {exc or type(exc).__name__}") from exc
