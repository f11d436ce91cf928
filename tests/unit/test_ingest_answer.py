"""Ingest's answer after publishing (pure): 202 only when every event is stored, else a 503 whose lists
say per event what the stream holds; and how one publish's answer becomes that event's fate."""

from __future__ import annotations

import asyncio
import json

import pytest

from hookline.sender.bus.connection import BusUnavailable, StoreRefused
from hookline.sender.bus.layout import STREAM
from hookline.sender.bus.publish import Fate, NotStored, fate_of, publish_reply
from hookline.sender.ingest.answer import publish_answer

IDS = ["a", "b", "c", "d", "e", "f"]


def test_all_stored_is_the_202_answer_unchanged():
    fates = [Fate.STORED, Fate.DUPLICATE, Fate.STORED, Fate.STORED, Fate.STORED, Fate.STORED]
    answer = publish_answer(IDS, fates, None, retry_after=2)
    assert (answer.status, answer.retry_after) == (202, None)
    assert answer.body == {"accepted": IDS, "duplicates": ["b"]}
    assert (answer.stored, answer.duplicates) == (5, 1)


def test_a_partial_503_lists_every_id_once_in_request_order():
    fates = [Fate.STORED, Fate.REFUSED, Fate.DUPLICATE, Fate.UNKNOWN, Fate.NOT_SENT, Fate.STORED]
    answer = publish_answer(IDS, fates, "JetStream refused the events: maximum bytes exceeded", retry_after=2)
    assert (answer.status, answer.retry_after) == (503, 2)
    body = answer.body
    assert body["accepted"] == ["a", "c", "f"]
    assert body["duplicates"] == ["c"]
    assert body["notAccepted"] == ["b", "e"]
    assert body["unknown"] == ["d"]
    assert "maximum bytes exceeded" in body["error"]
    assert "3 of 6 events were stored (accepted), 2 were not (notAccepted) and 1 may" in body["error"]
    assert "same ids" in body["error"] and "retry" in body["error"]
    assert (answer.stored, answer.duplicates) == (2, 1)
    json.dumps(body)  # plain JSON


def test_nothing_stored_says_so_and_asks_for_the_same_request_again():
    answer = publish_answer(IDS[:2], [Fate.NOT_SENT, Fate.REFUSED], "not connected to NATS", retry_after=3)
    assert answer.status == 503
    assert (answer.body["accepted"], answer.body["notAccepted"], answer.body["unknown"]) == ([], IDS[:2], [])
    assert "none of the 2 events was stored" in answer.body["error"]
    assert "retry the same request" in answer.body["error"]
    assert (answer.stored, answer.duplicates) == (0, 0)


def test_only_unknown_is_not_called_nothing_stored():
    answer = publish_answer(IDS[:2], [Fate.UNKNOWN, Fate.UNKNOWN], None, retry_after=2)
    assert answer.status == 503
    assert answer.body["unknown"] == IDS[:2]
    assert "none" not in answer.body["error"]
    assert "did not confirm every event" in answer.body["error"]


def test_ids_and_fates_must_pair_up():
    with pytest.raises(ValueError, match="2 ids but 1 fates"):
        publish_answer(["a", "b"], [Fate.STORED], None, retry_after=2)


@pytest.mark.parametrize(
    ("fate", "stored"),
    [
        (Fate.STORED, True),
        (Fate.DUPLICATE, True),
        (Fate.REFUSED, False),
        (Fate.NOT_SENT, False),
        (Fate.UNKNOWN, None),
    ],
)
def test_what_each_fate_says_about_the_stream(fate, stored):
    assert fate.stored is stored


def test_publish_replies_are_read_as_stored_refused_or_not_there():
    ack = publish_reply(json.dumps({"stream": STREAM, "seq": 7}).encode(), None)
    assert ack == {"stream": STREAM, "seq": 7}
    full = publish_reply(
        json.dumps(
            {"error": {"code": 503, "err_code": 10077, "description": "maximum bytes exceeded"}}
        ).encode(),
        None,
    )
    assert isinstance(full, StoreRefused) and full.err_code == 10077
    assert isinstance(publish_reply(b"", "503"), NotStored)
    assert isinstance(publish_reply(json.dumps({"stream": "OTHER", "seq": 1}).encode(), None), NotStored)
    unreadable = publish_reply(b"not json", None)
    assert isinstance(unreadable, BusUnavailable) and not isinstance(unreadable, NotStored | StoreRefused)


async def test_a_publish_future_becomes_a_fate():
    loop = asyncio.get_running_loop()

    def settled(value: object) -> asyncio.Future[dict[str, object]]:
        future: asyncio.Future[dict[str, object]] = loop.create_future()
        if isinstance(value, BaseException):
            future.set_exception(value)
        else:
            future.set_result(value)  # type: ignore[arg-type]
        return future

    assert fate_of(None) == (Fate.NOT_SENT, None)
    assert fate_of(loop.create_future()) == (Fate.UNKNOWN, None)  # no answer (yet)
    assert fate_of(settled({"stream": STREAM, "seq": 1}))[0] is Fate.STORED
    assert fate_of(settled({"stream": STREAM, "seq": 1, "duplicate": True}))[0] is Fate.DUPLICATE
    refused = StoreRefused("maximum bytes exceeded", 10077)
    assert fate_of(settled(refused)) == (Fate.REFUSED, refused)
    nowhere = NotStored("no JetStream stream answered")
    assert fate_of(settled(nowhere)) == (Fate.REFUSED, nowhere)
    garbled = BusUnavailable("unreadable answer from JetStream")
    assert fate_of(settled(garbled)) == (Fate.UNKNOWN, garbled)
    cancelled = loop.create_future()
    cancelled.cancel()
    assert fate_of(cancelled) == (Fate.UNKNOWN, None)
