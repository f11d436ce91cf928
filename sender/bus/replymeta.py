"""What a JetStream message's reply subject says of it (its sequences, delivery count, when it was
stored), read without nats-py's costs: every engine reads it of every message it is handed."""

from __future__ import annotations

import datetime

from nats.aio.msg import Msg

__all__ = ["ReplyMetadata", "message_stored_at"]

_UTC = datetime.UTC
_new = object.__new__
_set = object.__setattr__


class ReplyMetadata:
    """What nats-py's `Msg.Metadata` says of a JetStream reply subject, without its costs: the subject is
    split once and its four numbers read then (what every engine reads of every message is among them);
    the sequence pair, the datetime and the names are made only when asked for. nats-py's own parser
    (which makes every field and a datetime up front) was the largest single cost of a batched sender
    per event.
    `tests/unit/test_feed_metadata.py` holds every field equal to nats-py's for both forms:
    `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>` and the 12-token one with
    domain and account hash. Raises ValueError on anything else."""

    __slots__ = (
        "_at",
        "_consumer_sequence",
        "_sequence",
        "_stored_ns",
        "_stream_sequence",
        "_tokens",
        "num_delivered",
    )

    def __init__(self, reply: str) -> None:
        tokens = reply.split(".")
        count = len(tokens)
        if tokens[0] != "$JS" or count < 9 or tokens[1] != "ACK" or count == 10:
            raise ValueError(f"not a JetStream reply: {reply!r}")
        at = 2 if count == 9 else 4
        try:
            self.num_delivered = int(tokens[at + 2])
            self._stream_sequence = int(tokens[at + 3])
            self._consumer_sequence = int(tokens[at + 4])
            self._stored_ns = int(tokens[at + 5])
        except ValueError:
            raise ValueError(f"not a JetStream reply: {reply!r}") from None
        self._tokens = tokens
        self._at = at
        self._sequence: Msg.Metadata.SequencePair | None = None

    @property
    def sequence(self) -> Msg.Metadata.SequencePair:
        pair = self._sequence
        if pair is None:
            pair = _new(Msg.Metadata.SequencePair)
            _set(pair, "consumer", self._consumer_sequence)
            _set(pair, "stream", self._stream_sequence)
            self._sequence = pair
        return pair

    @property
    def num_pending(self) -> int:
        return int(self._tokens[self._at + 6])

    @property
    def stored_at(self) -> float:
        """When the stream stored the message, in Unix seconds (what `timestamp` says, without a datetime)."""
        return self._stored_ns / 1e9

    @property
    def timestamp(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.stored_at, _UTC)

    @property
    def stream(self) -> str:
        return self._tokens[self._at]

    @property
    def consumer(self) -> str:
        return self._tokens[self._at + 1]

    @property
    def domain(self) -> str | None:
        if self._at == 2:
            return None
        domain = self._tokens[2]
        return "" if domain == "_" else domain


def message_stored_at(msg: Msg) -> float:
    """When the stream stored `msg`, in Unix seconds."""
    meta = msg.metadata
    return meta.stored_at if isinstance(meta, ReplyMetadata) else meta.timestamp.timestamp()
