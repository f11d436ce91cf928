"""The install's NATS accounts at start: read the auth Secret (made when missing) once the API answers,
then give the operator its NATS user and the minter of senders' users (adapters/natsauth.py)."""

from __future__ import annotations

import asyncio
import logging

from hookline.operator.adapters.natsauth import minter_of, read_or_make_auth_secret, write_private
from hookline.operator.rules.natscreds import NatsAuthSettings
from hookline.operator.runtime import Runtime
from hookline.sender.bus.connection import BusAuth

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
