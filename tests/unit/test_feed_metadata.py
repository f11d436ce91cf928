"""The feed's own parse of a JetStream reply subject gives what nats-py's does (both forms), and its queue
knows which messages wait long."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from hookline.sender.bus import feed as feed_module
from hookline.sender.bus.feed import ReplyMetadata, stored_at

V1 = "$JS.ACK.HOOKLINE_EVENTS.hookline-shop-orders.3.1234.987.1733300000123456789.41"
V2 = "$JS.ACK._.ABCHASH.HOOKLINE_EVENTS.hookline-shop-orders.1.77.76.1733300000000000001.0.rnd"
V2_DOMAIN = "$JS.ACK.hub.ABCHASH.HOOKLINE_EVENTS.c.2.5.4.1733300000999999999.12.rnd"


@pytest.mark.parametrize("reply", [V1, V2, V2_DOMAIN])
def test_reply_metadata_equals_nats_py(reply: str):
    ours = ReplyMetadata(reply)
    theirs = Msg.Metadata._from_reply(reply)
    for name in ("sequence", "num_pending", "num_delivered", "timestamp", "stream", "consumer", "domain"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.stored_at == pytest.approx(theirs.timestamp.timestamp(), abs=1e-6)  # datetime: whole us


def test_a_message_from_the_feed_tells_when_it_was_stored():
    msg = Msg(_client=None, subject="hookline.events.open._._", reply=V1)  # type: ignore[arg-type]
    msg._metadata = ReplyMetadata(V1)  # type: ignore[assignment]
    plain = Msg(_client=None, subject="hookline.events.open._._", reply=V1)  # type: ignore[arg-type]
    when = Msg.Metadata._from_reply(V1).timestamp.timestamp()
    assert stored_at(msg) == pytest.approx(when, abs=1e-6) and stored_at(plain) == when


@pytest.mark.parametrize("reply", ["_INBOX.abc", "$JS.ACK.a.b.c", "$JS.ACK.S.C.x.1.1.1.1", ""])
def test_reply_metadata_refuses_other_subjects(reply: str):
    with pytest.raises((ValueError, IndexError)):
        ReplyMetadata(reply)


def test_the_feed_queue_says_which_messages_wait_long_and_restarts_their_clocks(monkeypatch):
    """Events read ahead are reported in progress once per `keep_after`, not at every look."""
    now = [100.0]
    monkeypatch.setattr(feed_module.time, "monotonic", lambda: now[0])
    queue = feed_module.ArrivalQueue()
    first, second = object(), object()
    queue.put_nowait(first)
    now[0] += 5.0
    queue.put_nowait(second)
    queue.put_nowait(None)  # a stop marker is never reported
    assert queue.waiting(4.0) == [first]
    assert queue.waiting(4.0) == []  # just reported
    now[0] += 4.5
    assert queue.waiting(4.0) == [first, second]
    assert queue.get_nowait() is first and queue.get_nowait() is second  # still first in, first out
    assert queue.get_nowait() is None and queue.empty()
