"""The demo receiver of `make run`: a stand-in for a customer's server.

It learns the Webhooks' ownership files from dev mode's `GET /v1/webhooks` and serves them (so
verification succeeds), and prints one line per delivery: event type, key fields and whether the
Standard Webhooks signature checks out with the Secret from the manifests. Run on its own with
`python -m hookline.demo_receiver --dev-url http://127.0.0.1:8080 --manifests examples`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from aiohttp import web

from hookline.sender.model.signing import SignatureError, verify
from hookline.sender.model.wire import decode_form
from hookline.sender.observe.health import parse_listen, run_until_signal, start_site
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.egress import EgressPolicy
from hookline.sender.transport.errors import SafeHTTPError

log = logging.getLogger(__name__)

# The fields worth a glance per event type (the rest is in the body).
KEY_FIELDS = {
    "open": ("recipient", "database", "ip"),
    "click": ("recipient", "original", "database"),
    "bounce": ("recipient", "database"),
    "failure": ("recipient", "state", "code", "description"),
    "delivery": ("recipient", "database"),
    "create": ("database", "profile", "collection", "subprofile"),
    "update": ("database", "profile", "collection", "subprofile"),
    "delete": ("database", "profile", "collection", "subprofile"),
}


def parse_body(content_type: str, body: bytes) -> dict[str, Any]:
    if content_type.startswith("application/json"):
        try:
            parsed = json.loads(body)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return decode_form(body)


def signature_verdict(headers: Mapping[str, str], body: bytes, secrets: list[str]) -> str:
    if not any(k.lower() == "webhook-signature" for k in headers):
        return "unsigned"
    if not secrets:
        return "signature not checked (no Secret in the manifests for this path)"
    try:
        verify(secrets, headers, body)
    except SignatureError as exc:
        return f"signature BAD ({exc})"
    return "signature OK"


def batch_events(content_type: str, body: bytes) -> list[Any] | None:
    """The events of a batch (a JSON array, or a form of events[i][...] only), or None."""
    if content_type.startswith("application/json"):
        if not body.lstrip().startswith(b"["):
            return None
        try:
            parsed = json.loads(body)
        except ValueError:
            return None
        return parsed if isinstance(parsed, list) else None
    form = decode_form(body)
    events = form.get("events")
    return events if list(form) == ["events"] and isinstance(events, list) else None


def describe_request(path: str, headers: Mapping[str, str], body: bytes, secrets: list[str]) -> str:
    """One line for a delivery: where, what, the key fields and the signature check."""
    events = batch_events(headers.get("Content-Type", ""), body)
    if events is not None:
        types: dict[str, int] = {}
        for event in events:
            kind = str(event.get("type", "?")) if isinstance(event, dict) else "?"
            types[kind] = types.get(kind, 0) + 1
        summary = ",".join(f"{kind}x{count}" for kind, count in sorted(types.items()))
        return (
            f"POST {path}  batch of {len(events)} ({summary})  id={headers.get('webhook-id', '?')}  "
            f"{signature_verdict(headers, body, secrets)}"
        )
    fields = parse_body(headers.get("Content-Type", ""), body)
    event_type = str(fields.get("type", "?"))
    parts = [f"id={headers.get('webhook-id', '?')}"]
    for name in KEY_FIELDS.get(event_type, ()):
        if fields.get(name) not in (None, ""):
            parts.append(f"{name}={fields[name]}")
    if isinstance(fields.get("fields"), dict) and fields["fields"]:
        parts.append("fields=" + ",".join(sorted(fields["fields"])))
    return f"POST {path}  {event_type}  {' '.join(parts)}  {signature_verdict(headers, body, secrets)}"


class DemoReceiver:
    def __init__(
        self,
        dev_url: str,
        secrets_by_path: Mapping[str, list[str]],
        *,
        out: TextIO = sys.stdout,
        poll_interval: float = 1.0,
    ) -> None:
        self.dev_url = dev_url.rstrip("/")
        self.secrets_by_path = dict(secrets_by_path)
        self.out = out
        self.poll_interval = poll_interval
        self.files: dict[str, str] = {}
        self._runner: web.AppRunner | None = None
        self._poller: asyncio.Task[None] | None = None
        self._client = SafeHTTPClient(EgressPolicy.for_dev())

    def _print(self, line: str) -> None:
        print(f"[demo-receiver] {line}", file=self.out, flush=True)

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._serve_file)
        app.router.add_post("/{path:.*}", self._receive)
        await self._client.start()
        self._runner = await start_site(app, host, port)
        await self.sync()
        self._poller = asyncio.create_task(self._poll(), name="demo receiver poll")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._runner is not None:
            await self._runner.cleanup()
        await self._client.close()

    async def sync(self) -> None:
        """Learn (again) which ownership files to serve."""
        try:
            response = await self._client.request("GET", f"{self.dev_url}/v1/webhooks", timeout=5)
            items = json.loads(response.body).get("items", [])
        except (SafeHTTPError, ValueError, AttributeError) as exc:
            log.debug("demo receiver: cannot list webhooks: %s", exc)
            return
        for item in items:
            verification = (item.get("status") or {}).get("verification") or {}
            name, content = verification.get("fileName"), verification.get("content")
            if name and content and name not in self.files:
                self.files[name] = content
                self._print(f"serving {name} for {item['metadata']['namespace']}/{item['metadata']['name']}")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            await self.sync()

    async def _serve_file(self, request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[-1]
        content = self.files.get(name)
        if content is None:
            return web.Response(status=404, text="not found\n")
        self._print(f"GET {request.path}  ownership file served")
        return web.Response(text=content + "\n")

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        secrets = self.secrets_by_path.get(request.path, [])
        self._print(describe_request(request.path, request.headers, body, secrets))
        return web.Response(text="ok\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hookline.demo_receiver", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:8090", help="HOST:PORT (default %(default)s)")
    parser.add_argument("--dev-url", default="http://127.0.0.1:8080", help="hookline dev's ingest URL")
    parser.add_argument("--manifests", default="examples", help="where the Secret manifests are")
    args = parser.parse_args(argv)
    from hookline.manifests import ManifestError, load_manifests, secrets_by_path

    try:
        manifests = load_manifests(args.manifests)
    except ManifestError as exc:
        print(f"demo receiver: {exc}", file=sys.stderr)
        return 2
    host, port = parse_listen(args.listen, 8090)

    async def serve(stop: asyncio.Event) -> int:
        receiver = DemoReceiver(args.dev_url, secrets_by_path(manifests.webhooks))
        await receiver.start(host, port)
        try:
            await stop.wait()
        finally:
            await receiver.stop()
        return 0

    return run_until_signal(serve)


if __name__ == "__main__":
    sys.exit(main())
