"""The bundle format and the verdict on a bundle's message (pure: model/bundles.py)."""

from __future__ import annotations

import pytest

from hookline.sender.model.bundles import (
    BUNDLE_HEADER,
    MAX_BUNDLE_EVENTS,
    BundleError,
    BundleProgress,
    bundle_size,
    pack,
    unpack,
    verdict,
)


def test_pack_and_unpack_keep_each_events_bytes():
    events = [b'{"id":"a"}', b'{"id":"b","x":"\\n"}']  # an escaped newline inside a string is fine
    payload, headers = pack(events)
    assert headers == {BUNDLE_HEADER: "2"}
    assert unpack(payload, bundle_size(headers)) == events


def test_a_message_without_the_header_is_one_event():
    assert bundle_size(None) is None
    assert bundle_size({"Nats-Msg-Id": "x"}) is None


@pytest.mark.parametrize("count", ["0", str(MAX_BUNDLE_EVENTS + 1), "-1", "1e3", "", "two"])
def test_a_count_outside_the_limit_names_the_header_and_the_limit(count):
    with pytest.raises(BundleError, match=f"{BUNDLE_HEADER} must be 1 to {MAX_BUNDLE_EVENTS}"):
        bundle_size({BUNDLE_HEADER: count})


def test_the_largest_bundle_is_accepted_and_one_more_event_refused():
    assert bundle_size(pack([b"{}"] * MAX_BUNDLE_EVENTS)[1]) == MAX_BUNDLE_EVENTS
    with pytest.raises(BundleError, match="1 to 1000 events, not 1001"):
        pack([b"{}"] * (MAX_BUNDLE_EVENTS + 1))


def test_a_payload_that_disagrees_with_its_count_is_refused():
    with pytest.raises(BundleError, match="says 3 events and holds 2"):
        unpack(b"{}\n{}", 3)
    with pytest.raises(BundleError, match="an empty one"):
        unpack(b"{}\n\n{}", 3)


def test_an_event_with_a_raw_newline_is_not_packed():
    with pytest.raises(BundleError, match="event 1"):
        pack([b"{}", b'{"a":\n1}'])


def test_a_bundle_whose_events_are_all_done_is_acked():
    assert verdict(3, frozenset({0, 1, 2}), {}, now=100.0).ack


def test_a_bundle_comes_back_when_its_earliest_event_is_due_and_remembers_the_rest():
    settled = verdict(4, frozenset({0, 3}), {1: 105.0, 2: 400.0}, now=100.0)
    assert not settled.ack and settled.delay == 5.0
    assert settled.progress == BundleProgress(frozenset({0, 3}), {1: 105.0, 2: 400.0})


def test_a_bundle_handed_back_whole_needs_no_record():
    settled = verdict(2, frozenset(), {0: 100.0, 1: 99.0}, now=100.0)
    assert (settled.ack, settled.delay, settled.progress) == (False, 0.0, None)


def test_every_event_must_be_settled_before_a_verdict():
    with pytest.raises(ValueError, match=r"events \[2\]"):
        verdict(3, frozenset({0}), {1: 1.0}, now=0.0)


def test_progress_survives_its_bytes_and_refuses_garbage():
    progress = BundleProgress(frozenset({1, 5}), {0: 12.5, 2: 99.25})
    assert BundleProgress.from_bytes(progress.to_bytes()) == progress
    for garbage in (b"", b"[]", b'{"done":[1]}', b'{"done":["x"],"due":{}}'):
        with pytest.raises(ValueError, match="not a bundle progress record"):
            BundleProgress.from_bytes(garbage)
