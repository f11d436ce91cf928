"""The pure rules of ingest's heavy lane: which bodies are heavy, and what the worker answers for one."""

from __future__ import annotations

import gzip
import json

import pytest

from hookline.sender.ingest.body import Outgoing, costs_the_worker
from hookline.sender.ingest.heavyworker import serve_one
from hookline.sender.model.examples import example_event

LIMIT = 64 * 1024


@pytest.mark.parametrize(
    ("encoding", "size", "heavy"),
    [
        ("identity", 100, False),
        ("identity", LIMIT, False),
        ("identity", LIMIT + 1, True),
        ("identity", None, False),  # not declared: decided once the body is read
        ("gzip", 10, True),
        ("x-gzip", None, True),
        ("deflate", 0, True),
    ],
)
def test_a_body_is_heavy_when_compressed_or_larger_than_the_limit(encoding, size, heavy):
    assert costs_the_worker(encoding, size, LIMIT) is heavy


def test_the_worker_answers_events_or_the_rejection_as_a_plain_tuple():
    body = json.dumps([{**example_event("open"), "id": "a"}]).encode()
    events = serve_one(gzip.compress(body), ("gzip", 1024 * 1024, 64 * 1024, 10_000))
    assert [type(e) for e in events] == [Outgoing] and events[0].id == "a"
    status, message, errors, rejected = serve_one(b"[{}, {}]", ("identity", 1024 * 1024, 64 * 1024, 1))
    assert (status, errors, rejected) == (400, [], 0)
    assert message == "2 events in one request; send at most 1 per request"
    status, message, _, _ = serve_one(gzip.compress(b" " * 2048), ("gzip", 1024, 64 * 1024, 10))
    assert status == 413 and "inflates to more than 1024 bytes" in message
