"""The install's NATS accounts at start: read the auth Secret (made when missing) once the API answers,
then give the operator its NATS user and the minter of senders' users (adapters/natsauth.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from hookline.api import parse_webhook_spec
from hookline.operator.adapters import kubeapi
from hookline.operator.adapters.consumers import Consumers
from hookline.operator.adapters.natsauth import (
    ensure_sender_secret,
    minter_of,
    read_or_make_auth_secret,
    write_private,
)
from hookline.operator.rules import desired, natscreds
from hookline.operator.rules.natscreds import NatsAuthSettings
from hookline.operator.runtime import Runtime
from hookline.sender import bus
from hookline.sender.bus.connection import BusAuth
from hookline.sender.bus.replay import pay_debt
from hookline.sender.model.config import SenderConfig, consumer_name
from hookline.sender.model.outcomes import GoneState

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0


def bootstraps(settings: NatsAuthSettings) -> bool:
    """Whether the operator reads (or makes) the auth Secret itself: the chart's embedded NATS."""
    return bool(settings.auth_secret) and not settings.keys_dir


async def load_auth_secret(rt: Runtime) -> None:
    settings = rt.config.nats_auth
    assert settings.auth_secret is not None
    while True:
        try:
            files = await read_or_make_auth_secret(rt.api, settings.namespace, settings.auth_secret)
            break
        except Exception as exc:  # the API not answering yet (Kopf logs in after startup), RBAC
            log.info("NATS auth Secret %s not read yet (%s); retrying", settings.auth_secret, exc)
            await asyncio.sleep(RETRY_SECONDS)
    folder = write_private(files)
    rt.nats_minter = minter_of(folder, rt.config.nats_url, settings.ca_file, settings.user_lifetime)
    rt.consumers.use_auth(BusAuth(creds_file=str(folder / "operator.creds"), tls_ca_file=settings.ca_file))
    log.info("NATS accounts loaded from Secret %s/%s", settings.namespace, settings.auth_secret)


async def renew_sender_users(rt: Runtime) -> None:
    """Mint again the senders' users whose JWTs have a third of their life left (a reconcile does it
    too, but a Webhook nobody touches is reconciled only when the operator restarts)."""
    while True:
        await asyncio.sleep(rt.config.nats_auth.renew_every_seconds)
        if rt.nats_minter is None or not rt.nats_minter.lifetime:
            continue
        try:
            renewed = await renew_due(rt)
        except Exception as exc:  # the API away: next time
            log.warning("NATS users not renewed this time: %s", exc)
            continue
        if renewed:
            log.info("NATS users of %d senders minted again (their JWTs were a third from expiry)", renewed)


async def renew_due(rt: Runtime) -> int:
    minter = rt.nats_minter
    assert minter is not None
    listed = await rt.api.get(f"/api/v1/secrets?labelSelector={natscreds.CREDENTIALS_LABEL}%3Dsender")
    renewed = 0
    now = time.time()
    for item in (listed or {}).get("items") or []:
        notes = (item.get("metadata") or {}).get("annotations") or {}
        try:
            expires = int(notes.get(natscreds.EXPIRES_ANNOTATION, "0"))
        except ValueError:
            expires = 0
        if expires - now >= minter.lifetime / 3:
            continue
        owners = [o for o in item["metadata"].get("ownerReferences") or [] if o.get("kind") == "Webhook"]
        if not owners:
            continue
        webhook = await rt.api.get(kubeapi.webhook(item["metadata"]["namespace"], owners[0]["name"]))
        if webhook is None or webhook["metadata"].get("uid") != owners[0].get("uid"):
            continue
        if await ensure_sender_secret(rt.api, minter, webhook) != "unchanged":
            renewed += 1
    return renewed


REMAKE_EVERY_SECONDS = 15.0


async def remake_lost_consumers(rt: Runtime) -> None:
    """With least-privileged senders (auth on) the operator does what they may not: make a consumer
    deleted behind hookline's back again (from its recorded floor, bus.ensure_consumer) and put back
    what it is owed from the recovery stream (bus/replay.py). The sender's health report says
    `consumerMissing`; its next pull after this finds the consumer."""
    mirrored: dict[tuple[str, str], float | None] = {}  # the 410 stops put on consumers, by since
    while True:
        await asyncio.sleep(REMAKE_EVERY_SECONDS)
        if rt.nats_minter is None:
            continue
        for key, report in list(rt.delivery.reports.items()):
            state = report.gone_state()
            if not state.gone:
                mirrored.pop(key, None)
            elif mirrored.get(key, -1.0) != state.since:  # once per stop: a resume must not be undone
                try:
                    await mirror_gone(rt.consumers, consumer_name(*key), state)
                    mirrored[key] = state.since
                except Exception as exc:  # NATS away, consumer missing: next time
                    log.warning("410 stop of %s/%s not recorded on its consumer yet: %s", key[0], key[1], exc)
            if not report.consumer_missing:
                continue
            try:
                await remake(rt, *key)
            except Exception as exc:  # the API or NATS away, a bad spec: next time
                log.warning("consumer of %s/%s not made again yet: %s", key[0], key[1], exc)


async def mirror_gone(consumers: Consumers, consumer: str, state: GoneState) -> None:
    """Record a least-privileged sender's 410 / circuit-breaker stop (from its health report) on its
    consumer and pause it, as the sender would with more rights: every replica stops, and
    `hookline redrive --resume` (which clears it) reaches the sender."""

    async def mark(js: Any) -> None:
        if not (await bus.read_gone(js, consumer)).gone:
            await bus.mark_gone(js, consumer, state)

    await consumers.call(f"recording the stop on consumer {consumer}", mark)


async def remake(rt: Runtime, namespace: str, name: str) -> bool:
    webhook = await rt.api.get(kubeapi.webhook(namespace, name))
    if webhook is None or webhook["metadata"].get("deletionTimestamp"):
        return False
    cfg = desired.sender_config(namespace, name, parse_webhook_spec(webhook.get("spec") or {}), rt.config)
    await remake_consumer(rt.consumers, cfg)
    log.warning("consumer of %s/%s was deleted outside hookline: made again by the operator", namespace, name)
    return True


async def remake_consumer(consumers: Consumers, cfg: SenderConfig) -> None:
    """Make the consumer again from its recorded floor and pay what it is owed (the operator's user)."""
    spec = bus.consumer_spec(cfg)

    async def make_and_pay(js: Any) -> None:
        await bus.ensure_consumer(js, spec)
        await pay_debt(js, spec)

    await consumers.call(f"making consumer {spec.name} again", make_and_pay, within=60)
