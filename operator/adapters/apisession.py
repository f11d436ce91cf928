"""The aiohttp session Kopf's API client runs on (adapters/login.py `bounded` hands it to Kopf).

Kopf's own session has no connection limit and keeps every object as the API server sends it. At
1,000 Webhooks created at once on a real kube-apiserver that was 1,090 TLS connections (~0.3 MiB
each) and 503 MiB peak RSS. Here:

- requests other than watches take one of ``requests`` slots, held until the body is read, so the
  connection pool stays near that size (watches are long-lived, one per resource and namespace: a
  limit on them could leave no connection for the requests);
- objects in watch events and lists arrive without what the operator never reads and a real
  server adds to every object: ``metadata.managedFields`` (about half of a Webhook's or a
  Deployment's JSON) and kubectl's last-applied-configuration annotation (the whole object again).
  Kopf queues every event of every object until its worker takes it, so this is what a burst of new
  Webhooks, or a restart among 10,000, holds. Single-object GETs (what a PUT is built from) and
  Kopf's merge patches are untouched.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kopf

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def slim(obj: Any) -> Any:
    """``obj`` (an object, in place) without managedFields and kubectl's last-applied annotation."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(LAST_APPLIED, None)
    return obj


def slim_line(line: bytes) -> bytes:
    """One watch event (a JSON line) with its object slimmed; a line that is not JSON as it came."""
    try:
        event = json.loads(line)
    except ValueError:
        return line
    if isinstance(event, dict) and isinstance(event.get("object"), dict):
        slim(event["object"])
    return json.dumps(event, separators=(",", ":")).encode()


class SlimStream:
    """A watch response's body as Kopf reads it (``iter_chunked``), one slimmed event per line."""

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self.content = content

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        buffer = b""
        async for data in self.content.iter_chunked(n):
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            out = [slim_line(line) for line in lines if line.strip()]
            if out:
                yield b"\n".join(out) + b"\n"
        if buffer.strip():
            yield slim_line(buffer) + b"\n"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.content, name)


class SlimResponse(aiohttp.ClientResponse):
    """Lists (Kopf's initial listing, in pages) decode with their items slimmed."""

    async def json(self, *args: Any, **kwargs: Any) -> Any:
        data = await super().json(*args, **kwargs)
        if isinstance(data, dict) and isinstance(data.get("items"), list):
            for item in data["items"]:
                slim(item)
        return data


def is_watch(request: aiohttp.ClientRequest) -> bool:
    return request.url.query.get("watch", "").lower() in ("true", "1")


def request_slots(limit: int) -> aiohttp.ClientMiddlewareType:
    """A client middleware: at most ``limit`` requests at once besides watches, whose events it
    slims as they arrive."""
    slots = asyncio.Semaphore(limit)

    async def bounded(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        if is_watch(request):
            response = await handler(request)
            response.content = SlimStream(response.content)  # type: ignore[assignment]
            return response
        async with slots:
            response = await handler(request)
            await response.read()  # kept on the response; the connection goes back to the pool now
            return response

    return bounded


def session_for(info: kopf.ConnectionInfo, requests: int) -> kopf.AiohttpSession:
    """Kopf's session for ``info`` (TLS, headers, proxy as Kopf makes them) with ``request_slots``."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
        middlewares=(request_slots(requests),),
        response_class=SlimResponse,
    )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
        aiohttp_session=session,
    )
