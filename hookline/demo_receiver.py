"""The demo receiver of `make run`: a stand-in for a customer's server.

It serves the Webhooks' ownership files (so verification succeeds) and prints one line per delivery:
event type, key fields and whether the Standard Webhooks signature checks out. Beside dev mode it
learns the files from `GET /v1/webhooks` and the signing keys from the manifests' Secrets. In a cluster
(`hookline demo-receiver --files DIR --secret-file FILE`, examples/kind/) it serves the files someone
placed in DIR, as a customer would, and checks signatures with the key in FILE. On its own beside dev
mode: `hookline demo-receiver --dev-url http://127.0.0.1:8080`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from hookline.sender.model.signing import (
    PUBLIC_PREFIX,
    SignatureError,
    parse_public_key,
    parse_secret,
    verify,
)
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
        dev_url: str | None,
        secrets_by_path: Mapping[str, list[str]],
        *,
        files_dir: Path | None = None,
        secrets: Sequence[str] = (),
        out: TextIO = sys.stdout,
        poll_interval: float = 1.0,
    ) -> None:
        self.dev_url = dev_url.rstrip("/") if dev_url else None  # None: no dev mode to learn files from
        self.secrets_by_path = dict(secrets_by_path)
        self.files_dir = files_dir  # ownership files placed by hand (in a cluster)
        self.secrets = list(secrets)  # signing keys for every path
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
        if self.dev_url is not None:
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
        if self.dev_url is None:
            return
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

    def _placed(self, name: str) -> str | None:
        """A file placed in `files_dir` (a plain name: no path, nothing hidden)."""
        if self.files_dir is None or not name or name.startswith(".") or "\\" in name:
            return None
        try:
            return (self.files_dir / name).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None

    async def _serve_file(self, request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[-1]
        content = self.files.get(name)
        if content is None:
            content = self._placed(name)
        if content is None:
            return web.Response(status=404, text="not found\n")
        self._print(f"GET {request.path}  ownership file served")
        return web.Response(text=content + "\n")

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        secrets = [*self.secrets_by_path.get(request.path, []), *self.secrets]
        self._print(describe_request(request.path, request.headers, body, secrets))
        return web.Response(text="ok\n")


DEFAULT_DEV_URL = "http://127.0.0.1:8080"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="127.0.0.1:8090", help="HOST:PORT (default %(default)s)")
    parser.add_argument(
        "--dev-url",
        help=f"hookline dev's ingest URL, to learn the ownership files from (default {DEFAULT_DEV_URL}, "
        "unless --files is given)",
    )
    parser.add_argument(
        "--files",
        type=Path,
        metavar="DIR",
        help="serve the ownership files placed in DIR (a file hookline-<token>.txt answers any path ending "
        "in that name)",
    )
    parser.add_argument(
        "--manifests",
        type=Path,
        metavar="DIR",
        help="check signatures with the Secrets of the Webhook manifests in DIR, by URL path (default: the "
        "examples shipped with hookline, unless --files is given)",
    )
    parser.add_argument(
        "--secret-file",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="check signatures on every path with the whsec_ key or whpk_ public key in FILE (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    from hookline.manifests import EXAMPLES, ManifestError, load_manifests, secrets_by_path

    beside_dev = args.files is None
    manifests_dir = args.manifests or (EXAMPLES if beside_dev else None)
    try:
        by_path = secrets_by_path(load_manifests(manifests_dir).webhooks) if manifests_dir else {}
        secrets = [path.read_text(encoding="utf-8").strip() for path in args.secret_file]
        for secret in secrets:  # whsec_ (v1) or an ed25519 public key whpk_ (v1a, from `hookline keys`)
            if secret.startswith(PUBLIC_PREFIX):
                parse_public_key(secret)
            else:
                parse_secret(secret)
        host, port = parse_listen(args.listen, 8090)
    except (ManifestError, OSError, ValueError) as exc:
        print(f"demo receiver: {exc}", file=sys.stderr)
        return 2
    dev_url = args.dev_url or (DEFAULT_DEV_URL if beside_dev else None)

    async def serve(stop: asyncio.Event) -> int:
        receiver = DemoReceiver(dev_url, by_path, files_dir=args.files, secrets=secrets)
        await receiver.start(host, port)
        print(f"[demo-receiver] listening on {host}:{port}", file=sys.stderr, flush=True)
        try:
            await stop.wait()
        finally:
            await receiver.stop()
        return 0

    return run_until_signal(serve)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hookline.demo_receiver", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
