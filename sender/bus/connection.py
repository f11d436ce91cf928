"""The connection to NATS: connect (and keep reconnecting), close quietly, and the errors that say
NATS cannot take or confirm something now (the caller retries later).

`DEFAULT_NATS_URL` and `NATS_URL_ENV` come from the sender config's model (sender/model/config.py),
the one place they are written; ingest, the CLI commands and the operator take them from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

import nats
from nats.aio.client import Client as NATS

from hookline.sender.bus.natsjwt import decode_jwt, jwt_of_creds
from hookline.sender.model.config import DEFAULT_NATS_URL, NATS_URL_ENV

__all__ = [
    "CREDS_ENV",
    "DEFAULT_NATS_URL",
    "NATS",
    "NATS_URL_ENV",
    "TLS_CA_ENV",
    "BusAuth",
    "BusUnavailable",
    "StoreRefused",
    "close_quietly",
    "connect",
]

log = logging.getLogger(__name__)

# How long a stopping feed waits for the server to confirm it sent its last messages.
DRAIN_TIMEOUT_SECONDS = 5.0


CREDS_ENV = "HOOKLINE_NATS_CREDS"  # the path of a .creds file (never the credentials themselves)
TLS_CA_ENV = "HOOKLINE_NATS_CA"  # the path of the CA bundle that signed the NATS server's certificate


@dataclass(frozen=True)
class BusAuth:
    """How a process proves who it is to NATS and checks the server: paths of mounted files only (a
    credential never sits in a ConfigMap, an env var value or a log line), and the reply-subject prefix
    its permissions allow (`natsperms.inbox_prefix`)."""

    creds_file: str | None = None
    tls_ca_file: str | None = None
    inbox_prefix: str | None = None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] = os.environ,
        *,
        creds_file: str | None = None,
        tls_ca_file: str | None = None,
        inbox_prefix: str | None = None,
    ) -> BusAuth:
        """Flags first, then HOOKLINE_NATS_CREDS / HOOKLINE_NATS_CA (paths)."""
        return cls(
            creds_file=creds_file or environ.get(CREDS_ENV, "").strip() or None,
            tls_ca_file=tls_ca_file or environ.get(TLS_CA_ENV, "").strip() or None,
            inbox_prefix=inbox_prefix,
        )

    def with_inbox(self, prefix: str | None) -> BusAuth:
        """Use `prefix` for replies when credentials are given (without them any inbox works)."""
        return replace(self, inbox_prefix=prefix) if self.creds_file and prefix else self

    def options(self) -> dict[str, object]:
        """nats-py connect options; a missing file is an error naming the setting."""
        out: dict[str, object] = {}
        if self.creds_file:
            if not os.path.isfile(self.creds_file):
                raise BusUnavailable(
                    f"NATS credentials file {self.creds_file} ({CREDS_ENV} / --nats-creds) does not exist; "
                    "check the Secret is mounted"
                )
            out["user_credentials"] = self.creds_file
        inbox = self.inbox_prefix or (inbox_of_creds(self.creds_file) if self.creds_file else None)
        if inbox:
            out["inbox_prefix"] = inbox
        if self.tls_ca_file:
            try:
                out["tls"] = ssl.create_default_context(cafile=self.tls_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise BusUnavailable(
                    f"NATS CA file {self.tls_ca_file} ({TLS_CA_ENV} / --nats-ca) unusable: {exc}"
                ) from None
        return out


NO_AUTH = BusAuth()


def inbox_of_creds(path: str) -> str | None:
    """The reply prefix a user's JWT allows (`_INBOX.<identity>.>` in its subscribe permissions), so a
    command given any hookline user's creds (`hookline redrive --nats-creds`) replies where it may."""
    try:
        claims = decode_jwt(jwt_of_creds(open(path, encoding="utf-8").read()))  # noqa: SIM115
    except (OSError, ValueError):
        return None
    allowed = ((claims.get("nats") or {}).get("sub") or {}).get("allow") or []
    for subject in allowed:
        if subject.startswith("_INBOX.") and subject.endswith(".>") and "*" not in subject:
            return subject[: -len(".>")]
    return None


class BusUnavailable(Exception):
    """NATS is not reachable or did not confirm in time; the caller should retry later."""


class StoreRefused(BusUnavailable):
    """JetStream answered a publish with an error (stream full, storage exhausted, ...)."""

    def __init__(self, description: str, err_code: int | None = None) -> None:
        super().__init__(description)
        self.err_code = err_code


async def connect(
    url: str,
    *,
    name: str = "hookline",
    on_state_change: Callable[[], Awaitable[None]] | None = None,
    on_closed: Callable[[], object] | None = None,
    connect_timeout: float = 5.0,
    initial_attempts: int = 5,
    auth: BusAuth = NO_AUTH,
) -> NATS:
    """Connect (a few tries, then BusUnavailable), then keep reconnecting forever after any loss.

    A NATS restart must not kill a running sender, but a wrong URL at startup should fail visibly.
    Some losses nats-py does not reconnect from (the server closing the connection over a protocol
    error such as "maximum payload exceeded"): `on_closed` is called then, and the service exits
    so that its pod is restarted, rather than answering "not connected" for good.
    """

    problems: list[Exception] = []

    async def _log_error(exc: Exception) -> None:
        problems.append(exc)
        log.warning("NATS connection problem: %s", exc)

    async def _notify() -> None:
        if on_state_change is not None:
            await on_state_change()

    async def _closed() -> None:
        if on_closed is not None:
            on_closed()

    options = auth.options()
    # nats-py may wait for good after a failed TLS handshake (a wrong CA): bound the whole start.
    bound = initial_attempts * (connect_timeout + 1.0) + connect_timeout
    try:
        async with asyncio.timeout(bound):
            nc = await nats.connect(
                url,
                name=name,
                connect_timeout=connect_timeout,
                max_reconnect_attempts=initial_attempts,
                reconnect_time_wait=1,
                allow_reconnect=True,
                error_cb=_log_error,
                disconnected_cb=_notify,
                reconnected_cb=_notify,
                closed_cb=_closed,
                **options,  # type: ignore[arg-type]
            )
    except Exception as exc:  # nats raises a variety of errors (NoServersError, OSError, TimeoutError)
        if isinstance(exc, TimeoutError) and problems:
            exc = problems[-1]  # what went wrong, not that it took long (an SSL verify error, ...)
        raise BusUnavailable(
            f"cannot connect to NATS at {url}: {exc or type(exc).__name__}; "
            "check that nats-server runs and the URL is right"
        ) from exc
    nc.options["max_reconnect_attempts"] = -1  # read by nats-py on every reconnect
    return nc


async def close_quietly(nc: NATS, within: float = DRAIN_TIMEOUT_SECONDS) -> None:
    """Drain when connected, else just close: a stop with NATS away (or the connection closed by the
    server) is a clean exit, not a traceback."""
    if nc.is_closed:
        return
    if nc.is_connected:
        try:
            async with asyncio.timeout(within):
                await nc.drain()
            return
        except (TimeoutError, nats.errors.Error) as exc:
            log.info("NATS drain did not finish (%s); closing", exc or type(exc).__name__)
    with contextlib.suppress(Exception):
        await nc.close()


_Companion = TypeVar("_Companion")


class PerConnection(Generic[_Companion]):
    """One companion object per NATS connection (a publisher, an outbox), made on first use and gone
    with the connection: `publisher_for = PerConnection(Publisher)`, then `publisher_for(nc)`."""

    def __init__(self, make: Callable[[NATS], _Companion]) -> None:
        self._make = make
        self._of: weakref.WeakKeyDictionary[NATS, _Companion] = weakref.WeakKeyDictionary()

    def __call__(self, nc: NATS) -> _Companion:
        companion = self._of.get(nc)
        if companion is None:
            companion = self._of[nc] = self._make(nc)
        return companion
