"""The operator's Lease calls (leader election), before and beside Kopf.

The election runs before Kopf starts (a standby never starts it), so it cannot use Kopf's client
(kubeapi.py), which lives inside the running operator. It logs in through the same login function
Kopf gets (in-cluster ServiceAccount, a kubeconfig, or a test's), and logs in again after a 401
(a ServiceAccount token is rotated every hour).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import kopf

log = logging.getLogger(__name__)

LoginFn = Callable[..., Any]
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10.0)


class LeaseError(Exception):
    """The API server did not answer as expected (the election tries again at its next step)."""


def lease_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return f"{base}/{name}" if name else base


class LeaseAPI:
    """get, create and replace one namespace's Leases; Conflicts are answers (None), not errors."""

    def __init__(
        self,
        login: LoginFn,
        settings: kopf.OperatorSettings,
        *,
        timeout: aiohttp.ClientTimeout = REQUEST_TIMEOUT,
    ) -> None:
        self._login = login
        self._settings = settings
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._server = ""

    async def _connect(self) -> aiohttp.ClientSession:
        if self._session is not None:
            return self._session
        info = self._login(logger=log, settings=self._settings, retry=0)
        if inspect.isawaitable(info):
            info = await info
        if not isinstance(info, kopf.ConnectionInfo):
            raise LeaseError(f"the login gave {type(info).__name__}, not one kopf.ConnectionInfo")
        self._server = info.server.rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
            headers={**info.as_http_headers(), "User-Agent": "hookline-operator/leader-election"},
            timeout=self._timeout,
        )
        return self._session

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        session = await self._connect()
        try:
            async with session.request(method, self._server + path, json=body) as response:
                payload = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise LeaseError(f"{method} {path}: {exc or type(exc).__name__}") from None
        if status == 401:
            await self.close()  # log in again next time
        return status, payload

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        status, payload = await self._call("GET", lease_path(namespace, name))
        if status == 404:
            return None
        return self._answer(status, payload, "reading")

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The new Lease, or None when another replica created it first."""
        status, payload = await self._call("POST", lease_path(namespace), body)
        if status == 409:
            return None
        return self._answer(status, payload, "creating")

    async def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The Lease as written, or None when it changed since it was read (409 Conflict)."""
        status, payload = await self._call("PUT", lease_path(namespace, name), body)
        if status == 409:
            return None
        return self._answer(status, payload, "writing")

    @staticmethod
    def _answer(status: int, payload: Any, doing: str) -> dict[str, Any]:
        if status >= 400 or not isinstance(payload, dict):
            message = payload.get("message") if isinstance(payload, dict) else payload
            raise LeaseError(f"{doing} the Lease: {status} {message}")
        return payload

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
