"""A small Kubernetes API client for hookline's own resources, on aiohttp, with kubectl's one-line errors.

Get, list, create and watch of `hookline.io` objects is all the commands need; every failure becomes a
CommandError that says what failed and what to do (unreachable, TLS, 401, 403 naming the permission,
404 naming the object or the missing CRD), never a traceback.
"""

from __future__ import annotations

import errno
import json
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp

from hookline import USER_AGENT
from hookline.api import GROUP, VERSION
from hookline.kubecli.errors import CommandError
from hookline.kubecli.kubeconfig import KubeConfig

REQUEST_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0


class NotFound(CommandError):
    """The object (or, for a list, the resource type) does not exist."""


@dataclass(frozen=True)
class Target:
    """What one request is about: its verb and resource, for the path and for the error messages."""

    verb: str  # get, list, watch, create
    plural: str
    namespace: str | None  # None: every namespace (list and watch only)
    name: str | None = None

    @property
    def path(self) -> str:
        where = f"/namespaces/{self.namespace}" if self.namespace else ""
        return f"/apis/{GROUP}/{VERSION}{where}/{self.plural}" + (f"/{self.name}" if self.name else "")

    @property
    def resource(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def scope(self) -> str:
        return f"-n {self.namespace}" if self.namespace else "--all-namespaces"


class KubeClient:
    """One kubeconfig context's API server; use as ``async with KubeClient(config) as kube``."""

    def __init__(self, config: KubeConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **self.config.headers}
        self._session = aiohttp.ClientSession(
            self.config.server,
            headers=headers,
            connector=aiohttp.TCPConnector(ssl=self.config.ssl),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_SECONDS),
            trust_env=self.config.proxy is None,  # HTTPS_PROXY/NO_PROXY, as kubectl honours them
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    # --- the verbs ---------------------------------------------------------------------------------------

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return await self._json("GET", Target("get", plural, namespace, name))

    async def list(self, plural: str, namespace: str | None, selector: str = "") -> dict[str, Any]:
        params = {"labelSelector": selector} if selector else None
        return await self._json("GET", Target("list", plural, namespace), params=params)

    async def create(self, plural: str, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._json("POST", Target("create", plural, namespace), body=body)

    async def watch(
        self, plural: str, namespace: str | None, resource_version: str, selector: str = ""
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events (``{"type": ADDED|MODIFIED|DELETED|ERROR, "object": ...}``) after a version,
        until the server ends the watch."""
        params = {"watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true"}
        if selector:
            params["labelSelector"] = selector
        target = Target("watch", plural, namespace)
        async with self._request("GET", target, params=params, timeout=None) as response:
            buffer = b""
            try:
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if line.strip():
                            yield json.loads(line)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise self._unreachable(exc) from None

    # --- one request ---------------------------------------------------------------------------------------

    async def _json(
        self,
        method: str,
        target: Target,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        async with self._request(method, target, params=params, body=body) as response:
            try:
                found: dict[str, Any] = await response.json(content_type=None)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise self._unreachable(exc) from None
            except ValueError:
                raise CommandError(f"{self.config.server} answered {target.verb} with no JSON") from None
            return found

    def _request(
        self,
        method: str,
        target: Target,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        timeout: float | None = REQUEST_TIMEOUT_SECONDS,
    ) -> _Answer:
        assert self._session is not None, "use KubeClient as an async context manager"
        return _Answer(self, method, target, params, body, timeout)

    def _unreachable(self, exc: BaseException) -> CommandError:
        return CommandError(
            f"cannot reach the Kubernetes API at {self.config.server}: {reason(exc)}; check your "
            f"kubeconfig context {self.config.context!r} (kubectl config current-context)"
        )

    async def _refusal(self, response: aiohttp.ClientResponse, target: Target) -> CommandError:
        try:
            status = await response.json(content_type=None)
            message = str(status.get("message") or "") if isinstance(status, dict) else ""
        except (aiohttp.ClientError, ValueError, OSError, TimeoutError):
            message = ""
        code = response.status
        if code == 401:
            return CommandError(
                f"the Kubernetes API at {self.config.server} did not accept the credentials of user "
                f"{self.config.user!r} (401 Unauthorized); log in again or refresh the token of context "
                f"{self.config.context!r}"
            )
        if code == 403:
            return CommandError(
                f"forbidden: you may not {target.verb} {target.resource} {target.scope} "
                f"({message or '403 Forbidden'}); ask for an RBAC role that grants {target.verb} on "
                f"{target.resource} (check: kubectl auth can-i {target.verb} {target.resource} "
                f"{target.scope})"
            )
        if code == 404 and target.name:
            kind = target.plural.rstrip("s")
            return NotFound(f"{kind} {target.namespace}/{target.name} not found")
        if code == 404:
            return NotFound(
                f"the API server has no {target.resource}: are the hookline CRDs installed? "
                f"(kubectl get crd {target.resource})"
            )
        detail = f": {message}" if message else ""
        return CommandError(f"{target.verb} {target.resource}: the API server answered {code}{detail}")


class _Answer:
    """``async with`` one request: the response when it is a success, else a CommandError raised."""

    def __init__(
        self,
        client: KubeClient,
        method: str,
        target: Target,
        params: Mapping[str, str] | None,
        body: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> None:
        self.client, self.method, self.target = client, method, target
        self.params, self.body, self.timeout = params, body, timeout
        self.response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        session, config = self.client._session, self.client.config
        assert session is not None
        try:
            self.response = await session.request(
                self.method,
                self.target.path,
                params=self.params,
                json=self.body,
                proxy=config.proxy,
                server_hostname=config.tls_server_name,
                timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=CONNECT_TIMEOUT_SECONDS),
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self.client._unreachable(exc) from None
        if self.response.status >= 400:
            refusal = await self.client._refusal(self.response, self.target)
            self.response.release()
            raise refusal
        return self.response

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.response is not None:
            self.response.release()


def reason(exc: BaseException) -> str:
    """A few words for why a connection failed, as kubectl says them."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"its TLS certificate is not trusted ({exc.certificate_error}); check certificate-authority"
    if isinstance(exc, aiohttp.ClientConnectorSSLError | ssl.SSLError):
        return f"TLS failed ({exc})"
    cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(cause, socket.gaierror):
        return "host not found (no such name in DNS)"
    if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
        return "connection refused"
    if isinstance(cause, TimeoutError | aiohttp.ServerTimeoutError):
        return f"no answer within {CONNECT_TIMEOUT_SECONDS:g} s"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    text = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
    return text.lower() if text[:1].isupper() and not text[1:2].isupper() else text
