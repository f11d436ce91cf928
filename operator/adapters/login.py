"""How the operator logs in to the API server, without the `kubernetes` client library.

In a pod: its ServiceAccount, as client-go's InClusterConfig reads it (the API server at
$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, the projected token, CA and namespace). Kopf calls
the login again when the server answers 401, so a rotated token file is read again. Outside a pod
(`hookline operator` on a laptop): Kopf's own kubeconfig login (token or client certificate of the
current context; $KUBECONFIG or ~/.kube/config).

`bounded` turns either into the aiohttp session Kopf then uses for everything (adapters/apisession.py:
bounded requests, slimmed objects).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import kopf

from hookline.operator.adapters.apisession import session_for

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster(
    settings: kopf.OperatorSettings, env: Mapping[str, str] = os.environ, account: Path = SERVICE_ACCOUNT
) -> kopf.ConnectionInfo | None:
    """The pod's ServiceAccount, or None outside a pod."""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    token_file = account / "token"
    if not host or not port or not token_file.is_file():
        return None
    namespace_file, ca_file = account / "namespace", account / "ca.crt"
    return kopf.ConnectionInfo(
        server=f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}",
        ca_path=str(ca_file) if ca_file.is_file() else None,
        token=token_file.read_text(encoding="utf-8").strip() or None,
        default_namespace=namespace_file.read_text(encoding="utf-8").strip()
        if namespace_file.is_file()
        else None,
        trust_env=settings.networking.trust_env,
    )


def login(*, settings: kopf.OperatorSettings, logger: Any, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """Kopf's login handler: the ServiceAccount in a pod, else the kubeconfig."""
    found = in_cluster(settings)
    if found is None:
        found = kopf.login_with_kubeconfig(settings=settings, logger=logger, **kwargs)
    if found is None:
        logger.error(
            "cannot log in to the Kubernetes API: not in a pod (no ServiceAccount) and no kubeconfig "
            "($KUBECONFIG or ~/.kube/config)"
        )
    return found


LoginFn = Callable[..., Any]


Context = kopf.ConnectionInfo | kopf.AiohttpSession


def bounded(login_fn: LoginFn, requests: int) -> Callable[..., Awaitable[Context | None]]:
    """``login_fn`` (a Kopf login handler, sync or async) whose ConnectionInfo becomes ``session_for``
    it. Kopf calls it again on a 401 and closes the old session itself."""

    async def login(**kwargs: Any) -> Context | None:
        found = login_fn(**kwargs)
        if inspect.isawaitable(found):
            found = await found
        if isinstance(found, kopf.ConnectionInfo):
            return session_for(found, requests)
        return found  # type: ignore[no-any-return]

    return login
