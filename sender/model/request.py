"""What a request to one Webhook looks like: its URL, format, headers, signing key and timeout, and
how one event or a batch of events becomes a body with its headers.

Shared by the delivery engine and the operator's WebhookTest (which must not import the delivery
loop), so a test request is rendered and signed exactly as a delivery is.

A batch has one ``webhook-id``, the batch id: ``batch_`` and 32 hex digits of a SHA-256 over the
sorted event ids, so the same events always get the same id (a retry of a batch, or a batch delivered
twice after a lost ack, can be de-duplicated by the receiver) and each event keeps its own ``id``
inside the body. One signature covers the whole body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from hookline.api import Batch, WebhookSpec
from hookline.api.credentials import SigningScheme
from hookline.sender.model.credentials import Credentials, as_credentials
from hookline.sender.model.events import Event
from hookline.sender.model.httpsig import signature_headers
from hookline.sender.model.signing import request_headers
from hookline.sender.model.signingkeys import sign_standard
from hookline.sender.model.wire import content_type_of, join_batch, render_batch_part, render_event

__all__ = ["BATCH_ID_PREFIX", "Delivery", "batch_id"]

BATCH_ID_PREFIX = "batch_"


def batch_id(event_ids: Sequence[str]) -> str:
    """The ``webhook-id`` of a batch of these events: the same for the same set, in any order."""
    digest = hashlib.sha256("\n".join(sorted(event_ids)).encode()).hexdigest()
    return f"{BATCH_ID_PREFIX}{digest[:32]}"


class Delivery:
    """Everything about one Webhook's requests that is fixed: URL, format, headers, keys, timeout.

    ``credentials`` are the Webhook's signing keys and secret header values (or, as before, one HMAC
    key as bytes); every live key signs every request, in the scheme ``spec.signing.scheme`` names.
    """

    def __init__(self, spec: WebhookSpec, credentials: Credentials | bytes | None) -> None:
        creds = as_credentials(credentials)
        self.url = spec.url
        self.format = spec.format
        self.extra_headers = {**spec.headers, **dict(creds.headers if creds else ())}
        self.keys = creds.keys if creds else ()
        self.http_signatures = bool(
            spec.signing and spec.signing.scheme == SigningScheme.HTTP_MESSAGE_SIGNATURES
        )
        self.timeout = float(spec.delivery.timeout_seconds)
        self.batch: Batch | None = spec.delivery.batch
        self.content_type = content_type_of(spec.format)

    def _headers(self, ident: str, now: float, content_type: str, body: bytes) -> dict[str, str]:
        timestamp = int(now)
        headers = request_headers(ident, timestamp, content_type, body, None, self.extra_headers)
        if not self.keys:
            return headers
        if self.http_signatures:
            headers.update(signature_headers(self.keys, "POST", self.url, ident, timestamp, body))
        else:
            headers["webhook-signature"] = sign_standard(self.keys, ident, timestamp, body)
        return headers

    def build(self, event: Event, now: float) -> tuple[bytes, dict[str, str]]:
        """One event per request (no batch): the body is the event, `webhook-id` its id."""
        content_type, body = render_event(event, self.format)
        return body, self._headers(event.id, now, content_type, body)

    def part(self, event: Event, index: int) -> bytes:
        """Event number `index` of a batch body, rendered (see wire.render_batch_part)."""
        return render_batch_part(event, index, self.format)

    def build_batch(
        self, events: Sequence[Event], now: float, parts: Sequence[bytes] | None = None
    ) -> tuple[str, bytes, dict[str, str]]:
        """``(batch id, body, headers)`` of a batch; `parts` are the events' rendered parts, when known."""
        if parts is None:
            parts = [self.part(event, index) for index, event in enumerate(events)]
        body = join_batch(list(parts), self.format)
        ident = batch_id([event.id for event in events])
        return ident, body, self._headers(ident, now, self.content_type, body)
