"""The public signing keys as JWKS documents (RFC 7517, RFC 8037 OKP Ed25519 keys with ``kid``), served
over HTTP by the leading operator from what it already holds: each Webhook's status.signing.

``GET /v1/keys/<namespace>/<webhook>`` is one Webhook's keys (404 when it has none);
``GET /.well-known/jwks.json`` is every Webhook's ed25519 keys (a receiver picks by ``kid``). Public keys
only: an HMAC key is a shared secret and is never listed. No new RBAC: status is what Kopf watches.
"""

from __future__ import annotations

import ssl

from aiohttp import web

from hookline.operator.rules.signingstatus import jwks
from hookline.operator.runtime import Runtime

JWKS_CONTENT_TYPE = "application/jwk-set+json"


def keys_app(rt: Runtime) -> web.Application:
    async def one(request: web.Request) -> web.Response:
        key = (request.match_info["namespace"], request.match_info["name"])
        status = rt.credentials.public.get(key)
        document = jwks([status] if status else [])
        if not document["keys"]:
            raise web.HTTPNotFound(text=f"no public signing keys for Webhook {key[0]}/{key[1]}\n")
        return web.json_response(document, content_type=JWKS_CONTENT_TYPE)

    async def every(_: web.Request) -> web.Response:
        return web.json_response(jwks(list(rt.credentials.public.values())), content_type=JWKS_CONTENT_TYPE)

    app = web.Application()
    app.router.add_get("/v1/keys/{namespace}/{name}", one)
    app.router.add_get("/.well-known/jwks.json", every)
    return app


def keys_tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """HTTPS for the endpoint when a certificate is given (customers fetch keys from outside)."""
    if not cert:
        return None
    if not key:
        raise ValueError("--keys-tls-cert needs --keys-tls-key (HOOKLINE_KEYS_TLS_KEY)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"the JWKS endpoint's certificate {cert} and key {key} do not load: {exc}") from None
    return context
