"""A real nats-server in the chart's auth mode: accounts and users minted by hookline's own code
(AuthKeys), the server config the way the chart renders it (its nats-server.conf including the
auth.conf the operator writes into the auth Secret), and clients that collect the server's refusals."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import yaml
from nats.aio.subscription import Subscription

from hookline.operator.adapters.natsauth import auth_secret_data
from hookline.sender.bus.natsaccounts import SERVER_CONFIG_FILE, AuthKeys, resolver_block
from hookline.sender.bus.natsperms import SenderIdentity, inbox_prefix
from hookline.sender.bus.natsserver import EmbeddedNats
from hookline.sender.model.config import consumer_name

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "bin" / "helm"
CHART = ROOT / "charts" / "hookline"


@functools.cache
def render_chart(*values: str) -> tuple[dict[str, Any], ...]:
    """`helm template` of the chart (release hk in namespace hookline) with `--set` values."""
    args = [str(HELM), "template", "hk", str(CHART), "--namespace", "hookline"]
    for value in values:
        args += ["--set", value]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def chart_nats_config(folder: Path) -> Path:
    """The chart's nats-server.conf (defaults: auth on) laid out as in the NATS pod: the ConfigMap's
    file in etc/nats, the auth Secret's auth.conf beside it in etc/nats-auth (written by the caller),
    the volume's /data in `folder`/data. Returns the config file's path."""
    (config_map,) = [
        d
        for d in render_chart()
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "hk-hookline-nats-config"
    ]
    text = config_map["data"]["nats-server.conf"]
    assert "include ../nats-auth/auth.conf" in text, "the chart's NATS config does not include the accounts"
    config = folder / "etc" / "nats" / "nats-server.conf"
    config.parent.mkdir(parents=True, exist_ok=True)
    (folder / "etc" / "nats-auth").mkdir(parents=True, exist_ok=True)
    config.write_text(text.replace('"/data/jwt"', json.dumps(str(folder / "data" / "jwt"))))
    return config


def chart_like_config(folder: Path) -> str:
    """What the chart's nats-server.conf holds besides its jetstream block: the accounts from the auth
    Secret's file, and the full resolver on the server's volume (here: `folder`)."""
    return f"include ./auth/{SERVER_CONFIG_FILE}\n" + resolver_block(str(folder / "jwt"))


@dataclass
class AuthedNats:
    """The server, its keys, the component credentials' files and a folder for more."""

    server: EmbeddedNats
    keys: AuthKeys
    folder: Path
    creds: dict[str, Path] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def sender_creds(self, namespace: str, name: str, uid: str = "uid-1") -> tuple[SenderIdentity, Path]:
        who = SenderIdentity(namespace, name, consumer_name(namespace, name))
        path = self.folder / f"sender-{namespace}-{name}.creds"
        path.write_text(self.keys.sender_creds(who, uid))
        return who, path

    def log(self) -> str:
        return (self.folder / "nats.log").read_text(errors="replace")


def start_authed_nats(folder: Path, server_conf: str | None = None, *, tls_block: str = "") -> AuthedNats:
    """The server as the chart runs it (`server_conf` None: the chart's rendered nats-server.conf and
    the auth Secret's files as the operator makes them); `server_conf`: a config of the caller's."""
    keys = AuthKeys.generate()
    if server_conf is None:  # the chart's own config and the Secret's files made by the operator's code
        config = chart_nats_config(folder)
        if tls_block:
            config.write_text(config.read_text() + tls_block)
        data = auth_secret_data(keys)
        (folder / "etc" / "nats-auth" / SERVER_CONFIG_FILE).write_text(data[SERVER_CONFIG_FILE])
    else:
        (folder / "auth").mkdir(parents=True, exist_ok=True)
        (folder / "auth" / SERVER_CONFIG_FILE).write_text(keys.server_config())
        config = folder / "nats-server.conf"
        config.write_text(server_conf)
        data = keys.component_creds()
    creds: dict[str, Path] = {}
    for file, text in data.items():
        if not file.endswith(".creds"):
            continue
        path = folder / file
        path.write_text(text)
        creds[file.removesuffix(".creds")] = path
    server = EmbeddedNats(folder / "store", config_file=config, log_file=folder / "nats.log").start()
    return AuthedNats(server, keys, folder, creds)


class Client:
    """A connection that records the server's permission refusals (nats-py reports them to error_cb)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.reported = asyncio.Event()
        self.nc: Any = None

    async def connect(self, url: str, creds: Path | None, inbox: str | None = None) -> Client:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))
            self.reported.set()

        options: dict[str, Any] = {}
        if creds is not None:
            options["user_credentials"] = str(creds)
        if inbox:
            options["inbox_prefix"] = inbox_prefix(inbox)
        self.nc = await nats.connect(
            url,
            error_cb=on_error,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=3,
            **options,
        )
        return self

    async def refused(self, what: str, action: Callable[[], Awaitable[Any]], within: float = 3.0) -> str:
        """Run `action`; it must fail (an error, or no answer) AND the server must report a permissions
        violation for it. Returns that report."""
        before = len(self.errors)
        succeeded = False
        with contextlib.suppress(Exception):
            result = await asyncio.wait_for(action(), within)
            # A core publish or a subscription gets no answer: the server's report is the refusal.
            succeeded = result is not None and not isinstance(result, Subscription)
        await self.nc.flush(timeout=within)
        if len(self.errors) == before:
            self.reported.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.reported.wait(), within)
        reports = [e for e in self.errors[before:] if "permissions violation" in e.lower()]
        assert reports, (
            f"{what}: not refused by the server (succeeded={succeeded}, errors={self.errors[before:]})"
        )
        assert not succeeded, f"{what}: the operation succeeded"
        return reports[0]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.close()
