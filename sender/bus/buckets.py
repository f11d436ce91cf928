"""Key-value bucket handles, looked up once per NATS connection.

Opening a bucket (`js.key_value`) is a STREAM.INFO request. An engine opened the floors bucket on every
floor it recorded and the health bucket once per start: at a pool replica's start, 8,016 of its 20,032
NATS requests for 1,000 Webhooks (bench/pool.py). A handle is only the bucket's name and subjects, so
one per connection serves every engine on it. A handle whose use failed is dropped (`using`): the
next use opens the bucket again, and a bucket deleted meanwhile is made again where the opener makes
it, as before.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

__all__ = ["Opener", "forget", "open_bucket", "using"]

# Opens the bucket (making it when that is the caller's wish); None: it does not exist.
Opener = Callable[[], Awaitable[Any]]

_HANDLES: weakref.WeakKeyDictionary[NATS | JetStreamContext, dict[str, Any]] = weakref.WeakKeyDictionary()


def _handles(js: JetStreamContext) -> dict[str, Any]:
    # By the connection every context of it shares (a context without one keeps its own).
    owner = getattr(js, "_nc", js)
    held = _HANDLES.get(owner)
    if held is None:
        held = _HANDLES[owner] = {}
    return held


async def open_bucket(js: JetStreamContext, name: str, opener: Opener) -> Any:
    """The handle of bucket `name` on `js`'s connection, opened with `opener` the first time (and
    after `forget`); None (not kept) when the opener found no bucket."""
    held = _handles(js)
    kv = held.get(name)
    if kv is None:
        kv = await opener()
        if kv is not None:
            held[name] = kv
    return kv


def forget(js: JetStreamContext, name: str) -> None:
    """Drop the handle: the next `open_bucket` opens the bucket again."""
    _handles(js).pop(name, None)


@contextlib.asynccontextmanager
async def using(js: JetStreamContext, name: str, opener: Opener) -> AsyncIterator[Any]:
    """The bucket's handle for one use (None: no bucket); if the use fails, the handle is dropped (the
    bucket may have been deleted: the next use opens, or makes, it again) and the error goes on to
    the caller. A key not found is an answer, not a failure."""
    kv = await open_bucket(js, name, opener)
    try:
        yield kv
    except KeyNotFoundError:
        raise
    except BaseException:
        forget(js, name)
        raise
