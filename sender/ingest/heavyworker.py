"""The heavy lane's worker process (`python -m hookline.sender.ingest.heavyworker`): inflates, decodes and
validates one large or compressed request body at a time for ingest (heavy.py), at idle CPU priority.

It reads requests from stdin and writes answers to stdout, both one end of a socket pair that ingest
holds the other end of. Each frame is a 4-byte big-endian length and its bytes; a request is a pickle
of the body's size, encoding and limits, the body itself waiting in a shared memory buffer (a memfd
ingest passes as `argv[1]`, `argv[2]` bytes long: one copy instead of a megabyte pushed through a
socket by the event loop), or in a second frame where there is none. An answer is one pickle. No
threads, no executor: ingest's event loop writes and reads the socket like any other. Only ingest
talks to it (the pickles pass between two processes of the same program, never from the network).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import struct
import sys
from typing import Any, BinaryIO

from hookline.sender.ingest.body import Rejection, prepare_body

__all__ = ["FRAME_HEADER", "READY", "lower_priority", "main", "serve_one"]

FRAME_HEADER = struct.Struct(">I")
READY = b"ready\n"


def lower_priority() -> None:
    """Run only on CPU that ingest's event loop (small requests, probes) leaves over: SCHED_IDLE, which
    any process may choose for itself; nice 19 where the scheduler has no idle class."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(stream: BinaryIO) -> bytes | None:
    header = _read_exactly(stream, FRAME_HEADER.size)
    return None if header is None else _read_exactly(stream, FRAME_HEADER.unpack(header)[0])


def serve_one(raw: bytes, request: tuple[Any, ...]) -> Any:
    """One body's answer: the events (list of Outgoing), or a Rejection as a plain tuple."""
    encoding, max_body_bytes, max_event_bytes, max_events = request
    try:
        return prepare_body(raw, encoding, max_body_bytes, max_event_bytes, max_events)
    except Rejection as rejection:
        return (rejection.status, rejection.message, rejection.errors, rejection.rejected_events)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    shared = mmap.mmap(int(args[0]), int(args[1])) if args else None
    lower_priority()
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sink.write(READY)  # ingest waits for this: no body reaches the worker before its priority is low
    sink.flush()
    while True:
        request = _read_frame(source)
        if request is None:
            return 0  # ingest closed its end: done
        size, *rest = pickle.loads(request)
        raw = shared[:size] if shared is not None else _read_frame(source)
        if raw is None:
            return 0
        answer = pickle.dumps(serve_one(raw, tuple(rest)), protocol=pickle.HIGHEST_PROTOCOL)
        sink.write(FRAME_HEADER.pack(len(answer)) + answer)
        sink.flush()


if __name__ == "__main__":
    sys.exit(main())
