"""Each namespace's share of the operator's one outbound client (ownership checks, WebhookTests).

The client holds 100 connections for every tenant together; without shares, one namespace with many
slow or hanging receivers (each check waits up to its timeout) would hold all of them and the
others' verifications and WebhookTests would wait behind it. A namespace runs at most
``per_namespace`` outbound operations at once (an ownership check makes its GETs one after another,
a WebhookTest one POST); the next waits for one of its own to finish, never for another tenant's.
A semaphore exists only while its namespace has an operation running or waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class NamespaceShares:
    """At most ``per_namespace`` outbound operations at once per namespace."""

    def __init__(self, per_namespace: int) -> None:
        if per_namespace < 1:
            raise ValueError("outbound requests per namespace must be at least 1")
        self.per_namespace = per_namespace
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def slot(self, namespace: str) -> AsyncIterator[None]:
        """Hold one of the namespace's slots for the duration of the block."""
        slots = self._slots.get(namespace)
        if slots is None:
            slots = self._slots[namespace] = asyncio.Semaphore(self.per_namespace)
        self._users[namespace] = self._users.get(namespace, 0) + 1
        try:
            async with slots:
                yield
        finally:
            self._users[namespace] -= 1
            if not self._users[namespace]:
                del self._users[namespace], self._slots[namespace]

    def busy(self, namespace: str) -> int:
        """Operations of the namespace running now (metrics, tests)."""
        slots = self._slots.get(namespace)
        return 0 if slots is None else self.per_namespace - slots._value
