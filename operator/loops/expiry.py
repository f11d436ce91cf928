"""Delete finished WebhookTests older than the TTL: one loop for all of them.

Not a Kopf timer: a timer needs a finalizer on every WebhookTest, and without the operator such
objects (and their namespace) could never be deleted. webhook_test_seen keeps the index it reads.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from hookline.operator.adapters import kubeapi
from hookline.operator.runtime import Runtime

log = logging.getLogger(__name__)


async def expire_webhook_tests(rt: Runtime) -> None:
    finished = rt.tests.finished
    while True:
        await asyncio.sleep(rt.config.test_expiry.interval(rt.config.test_ttl))
        for key, finished_at in list(finished.items()):
            if age(finished_at) < rt.config.test_ttl:
                continue
            try:
                await rt.api.delete(kubeapi.webhook_test(*key))
            except kubeapi.APIError as exc:
                log.warning("could not delete expired WebhookTest %s/%s: %s; trying again later", *key, exc)
                continue
            finished.pop(key, None)


def age(timestamp: str) -> float:
    """Seconds since ``timestamp`` (status.sentAt or creationTimestamp); 0 when it is unreadable."""
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return (datetime.now(UTC) - then).total_seconds()
