"""The resolver behind both request paths: it checks EVERY address a host resolves to.

Why: the host is resolved once per connection, one private address among public ones refuses the host,
and the connection goes to exactly the addresses that were checked, so a second, different DNS answer
(rebinding) cannot slip in between check and connect.
"""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult

from hookline.sender.transport.egress import EgressPolicy
from hookline.sender.transport.errors import BlockedDestination, blocked_message


class PolicyResolver(AbstractResolver):
    """Resolves with an inner resolver and refuses the host if ANY address it resolves to is refused."""

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver) -> None:
        self._policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not results:
            raise OSError(f"{host} resolved to no address")
        for result in results:
            problem = self._policy.address_problem(result["host"])
            if problem:
                message = blocked_message(f"{host} (resolves to {result['host']})", problem)
                raise BlockedDestination(message, "blocked address")
        return results

    async def close(self) -> None:
        await self._inner.close()


__all__ = ["PolicyResolver"]
