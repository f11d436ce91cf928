"""The operator's few direct Kubernetes API calls (Deployments, ConfigMaps, Secrets, status patches).

They go through Kopf's own authenticated client, so they share its login, re-authentication on 401
and retries on 5xx/429 with the watches. That client is not public Kopf API: this module is the only
place that touches it, so a Kopf upgrade that moves it breaks here and nowhere else.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kopf._cogs.clients import api as _kopf_api  # private: see the module docstring
from kopf._cogs.clients import errors as _kopf_errors

log = logging.getLogger(__name__)

APIError = _kopf_errors.APIError
NotFound = _kopf_errors.APINotFoundError
Conflict = _kopf_errors.APIConflictError
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


def path(
    group: str, version: str, plural: str, namespace: str, name: str | None = None, sub: str | None = None
) -> str:
    base = f"/api/{version}" if group == "" else f"/apis/{group}/{version}"
    out = f"{base}/namespaces/{namespace}/{plural}"
    if name:
        out += f"/{name}"
    if sub:
        out += f"/{sub}"
    return out


def deployments(namespace: str, name: str | None = None) -> str:
    return path("apps", "v1", "deployments", namespace, name)


def configmaps(namespace: str, name: str | None = None) -> str:
    return path("", "v1", "configmaps", namespace, name)


def secret(namespace: str, name: str) -> str:
    return path("", "v1", "secrets", namespace, name)


def webhook(namespace: str, name: str, sub: str | None = None) -> str:
    return path("hookline.io", "v1alpha1", "webhooks", namespace, name, sub)


def webhook_test(namespace: str, name: str) -> str:
    return path("hookline.io", "v1alpha1", "webhooktests", namespace, name)


class KubeAPI:
    """get/create/patch/delete by URL path; must be used inside the running operator (its tasks)."""

    def __init__(self, settings: kopf.OperatorSettings) -> None:
        self._settings = settings

    async def get(self, url: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await _kopf_api.get(url, settings=self._settings, logger=log)
        except NotFound:
            return None

    async def create(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        return await _kopf_api.post(url, payload=body, settings=self._settings, logger=log)

    async def replace(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT the whole object; with metadata.resourceVersion set, Conflict if it changed meanwhile."""
        response = await _kopf_api.request(
            method="put", url=url, payload=body, settings=self._settings, logger=log
        )
        async with response:
            return await response.json()  # type: ignore[no-any-return]

    async def patch(self, url: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch; None when the object is gone."""
        try:
            return await _kopf_api.patch(
                url, payload=body, headers=MERGE_PATCH, settings=self._settings, logger=log
            )
        except NotFound:
            return None

    async def delete(self, url: str) -> bool:
        """False when it was already gone."""
        try:
            await _kopf_api.delete(url, settings=self._settings, logger=log)
        except NotFound:
            return False
        return True
