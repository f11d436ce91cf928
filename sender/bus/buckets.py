"""Key-value bucket handles, looked up once per NATS connection.

Opening a bucket (`js.key_value`) is a STREAM.INFO request. An engine opened the floors bucket on every
floor it recorded and the health bucket once per start: at a pool replica's start, 8,016 of its 20,032
NATS requests for 1,000 Webhooks (bench/pool.py). A handle is only the bucket's name and subjects, so
one per connection serves every engine on it, and engines that ask while it is being opened wait
for that one request (100 engines starting together made 100). A handle whose use failed is dropped
(`using`): the next use opens the bucket again, and a bucket deleted meanwhile is made again where
the opener makes it, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

__all__ = ["Opener", "using"]

# Opens the bucket (making it when that is the caller's wish); None: it does not exist.
Opener = Callable[[], Awaitable[Any]]

# Per connection (a context without one, a test's stand-in, keeps its own), by bucket and by how the
# context asks (API prefix, timeout): a handle sends its requests through the context that opened it.
_Key = tuple[str, str, float]  # bucket, API prefix, timeout
_HANDLES: weakref.WeakKeyDictionary[Any, dict[_Key, Any]] = weakref.WeakKeyDictionary()


def _slot(js: JetStreamContext, name: str) -> tuple[dict[_Key, Any], _Key]:
    owner = getattr(js, "_nc", js)
    held = _HANDLES.get(owner)
    if held is None:
        held = _HANDLES[owner] = {}
    return held, (name, getattr(js, "_prefix", ""), getattr(js, "_timeout", 0.0))


@contextlib.asynccontextmanager
async def using(js: JetStreamContext, name: str, opener: Opener) -> AsyncIterator[Any]:
    """The handle of bucket `name` for one use, opened with `opener` the first time on `js`'s
    connection (None, not kept: no bucket). If the use fails the handle is dropped (the bucket may
    have been deleted: the next use opens, or makes, it again) and the error goes on to the caller.
    A key not found is an answer, not a failure."""
    held, key = _slot(js, name)
    kv = held.get(key)
    if kv is None:
        kv = held[key] = asyncio.ensure_future(opener())
        kv.add_done_callback(functools.partial(_opened, held, key))
    if isinstance(kv, asyncio.Future):
        kv = await asyncio.shield(kv)  # one caller's cancellation does not fail the others' open
    try:
        yield kv
    except KeyNotFoundError:
        raise
    except BaseException:
        if held.get(key) is kv:
            del held[key]
        raise


def _opened(held: dict[_Key, Any], key: _Key, opening: asyncio.Future[Any]) -> None:
    """The open's outcome in place of the open: the handle, or nothing (no bucket, or it failed)."""
    if held.get(key) is not opening:
        return
    if opening.cancelled() or opening.exception() is not None or opening.result() is None:
        del held[key]
    else:
        held[key] = opening.result()
