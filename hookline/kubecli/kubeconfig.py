"""The kubeconfig as kubectl reads it: which files, which context, its cluster, user and namespace.

hookline's commands for people need only this and aiohttp (already a runtime dependency), not the
126 MB `kubernetes` client library: token, token file, basic auth, client certificates (files or data),
a CA (file or data), `insecure-skip-tls-verify`, `tls-server-name`, `proxy-url`, and credential plugins
(`exec`, as EKS, GKE and AKS kubeconfigs use). Relative paths are relative to the kubeconfig file.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hookline.kubecli.errors import CommandError

KUBECONFIG_ENV = "KUBECONFIG"
DEFAULT_KUBECONFIG = "~/.kube/config"
EXEC_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class KubeConfig:
    """One context of a kubeconfig, resolved: where the API is and how to log in to it."""

    source: str  # the file(s) read, for messages
    context: str
    user: str
    server: str
    namespace: str | None  # the context's namespace, if it names one
    ssl: ssl.SSLContext | bool  # False: insecure-skip-tls-verify
    headers: Mapping[str, str] = field(default_factory=dict)  # Authorization, when the user has one
    tls_server_name: str | None = None
    proxy: str | None = None


def kubeconfig_paths(explicit: str | None, env: Mapping[str, str] = os.environ) -> list[Path]:
    """The files kubectl would read: --kubeconfig, else every existing file in $KUBECONFIG, else
    ~/.kube/config when it exists. An explicit file that does not exist is an error; none at all is []."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise CommandError(f"kubeconfig {explicit}: no such file; check --kubeconfig")
        return [path]
    listed = env.get(KUBECONFIG_ENV, "")
    if listed:
        paths = [Path(p).expanduser() for p in listed.split(os.pathsep) if p.strip()]
        return [p for p in paths if p.is_file()]
    default = Path(DEFAULT_KUBECONFIG).expanduser()
    return [default] if default.is_file() else []


def no_kubeconfig_error() -> CommandError:
    return CommandError(
        f"no kubeconfig found (--kubeconfig, ${KUBECONFIG_ENV} or {DEFAULT_KUBECONFIG}); "
        "point --kubeconfig at one, or check that `kubectl config current-context` works"
    )


def load_kubeconfig(
    explicit: str | None, context: str | None = None, env: Mapping[str, str] = os.environ
) -> KubeConfig | None:
    """The chosen context (--context, else the current one) of the kubeconfig; None when there is none."""
    paths = kubeconfig_paths(explicit, env)
    if not paths:
        return None
    merged = _merge(paths)
    source = os.pathsep.join(str(p) for p in paths)
    name = context or merged.current
    if not name:
        raise CommandError(
            f"kubeconfig {source} has no current context; pass --context or run "
            "`kubectl config use-context NAME`"
        )
    if name not in merged.contexts:
        known = ", ".join(sorted(merged.contexts)) or "none"
        raise CommandError(f"kubeconfig {source} has no context {name!r} (it has: {known})")
    ctx, ctx_base = merged.contexts[name]
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    if cluster_name not in merged.clusters:
        raise CommandError(f"context {name!r} names cluster {cluster_name!r}, which {source} does not define")
    cluster, cluster_base = merged.clusters[cluster_name]
    user, user_base = merged.users.get(user_name, ({}, ctx_base))
    server = str(cluster.get("server") or "").rstrip("/")
    if not server:
        raise CommandError(f"cluster {cluster_name!r} in {source} has no server address")
    creds = _credentials(user, user_base, str(user_name or ""), cluster, server)
    return KubeConfig(
        source=source,
        context=name,
        user=str(user_name or ""),
        server=server,
        namespace=ctx.get("namespace") or None,
        ssl=_ssl_context(cluster, cluster_base, user, user_base, creds, server),
        headers=creds.headers,
        tls_server_name=cluster.get("tls-server-name"),
        proxy=cluster.get("proxy-url"),
    )


# --- reading and merging the files ---------------------------------------------------------------------


@dataclass
class _Merged:
    """kubectl's merge: the first file that defines a name wins; each entry keeps its file's folder."""

    current: str | None = None
    contexts: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)
    clusters: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)
    users: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)


def _merge(paths: list[Path]) -> _Merged:
    merged = _Merged()
    for path in paths:
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise CommandError(f"cannot read kubeconfig {path}: {_first_line(exc)}") from None
        if not isinstance(doc, dict):
            raise CommandError(f"kubeconfig {path} is not a kubeconfig (a YAML mapping)")
        merged.current = merged.current or doc.get("current-context") or None
        for key, target in (
            ("contexts", merged.contexts),
            ("clusters", merged.clusters),
            ("users", merged.users),
        ):
            for entry in doc.get(key) or []:
                if isinstance(entry, dict) and entry.get("name") and entry["name"] not in target:
                    body = entry.get(key[:-1]) or {}
                    target[entry["name"]] = (body if isinstance(body, dict) else {}, path.parent)
    return merged


# --- credentials -----------------------------------------------------------------------------------------


@dataclass
class _Credentials:
    headers: dict[str, str] = field(default_factory=dict)
    certificate: bytes | None = None  # PEM, from an exec plugin
    key: bytes | None = None


def _credentials(
    user: Mapping[str, Any], base: Path, user_name: str, cluster: Mapping[str, Any], server: str
) -> _Credentials:
    creds = _Credentials()
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = _read(user["tokenFile"], base, "tokenFile").decode().strip()
    if not token and isinstance(user.get("auth-provider"), dict):
        token = (user["auth-provider"].get("config") or {}).get("access-token")
    if not token and isinstance(user.get("exec"), dict):
        token, creds.certificate, creds.key = _exec_plugin(user["exec"], base, user_name, cluster, server)
    if token:
        creds.headers["Authorization"] = f"Bearer {token}"
    elif user.get("username") is not None:
        pair = f"{user.get('username')}:{user.get('password') or ''}".encode()
        creds.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    return creds


def _exec_plugin(
    spec: Mapping[str, Any], base: Path, user_name: str, cluster: Mapping[str, Any], server: str
) -> tuple[str | None, bytes | None, bytes | None]:
    """Run a client-go credential plugin and read its ExecCredential (token or client certificate)."""
    command = str(spec.get("command") or "")
    if not command:
        raise CommandError(f"user {user_name!r}: exec has no command")
    if os.sep in command and not Path(command).is_absolute():
        command = str(base / command)
    info: dict[str, Any] = {
        "apiVersion": spec.get("apiVersion", "client.authentication.k8s.io/v1"),
        "kind": "ExecCredential",
        "spec": {"interactive": False},
    }
    if spec.get("provideClusterInfo"):
        info["spec"]["cluster"] = {"server": server, **{k: v for k, v in cluster.items() if k != "server"}}
    env = dict(os.environ)
    env.update({str(e["name"]): str(e.get("value", "")) for e in spec.get("env") or [] if "name" in e})
    env["KUBERNETES_EXEC_INFO"] = json.dumps(info)
    argv = [command, *[str(a) for a in spec.get("args") or []]]
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, timeout=EXEC_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        hint = f" ({spec['installHint'].strip()})" if spec.get("installHint") else ""
        raise CommandError(
            f"user {user_name!r} gets its credentials from `{command}`, which is not installed{hint}"
        ) from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandError(f"user {user_name!r}: running `{command}` failed: {_first_line(exc)}") from None
    if done.returncode != 0:
        said = _first_line(done.stderr.decode(errors="replace").strip()) or f"exit code {done.returncode}"
        raise CommandError(f"user {user_name!r}: `{command}` could not get credentials: {said}")
    try:
        status = json.loads(done.stdout).get("status") or {}
    except (ValueError, AttributeError):
        raise CommandError(f"user {user_name!r}: `{command}` did not print an ExecCredential") from None
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    return status.get("token"), cert.encode() if cert else None, key.encode() if key else None


# --- TLS -------------------------------------------------------------------------------------------------


def _ssl_context(
    cluster: Mapping[str, Any],
    cluster_base: Path,
    user: Mapping[str, Any],
    user_base: Path,
    creds: _Credentials,
    server: str,
) -> ssl.SSLContext | bool:
    if not server.startswith("https://"):
        return False  # plain http: no TLS at all
    if cluster.get("insecure-skip-tls-verify"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        ca = _data_or_file(cluster, "certificate-authority", cluster_base)
        try:
            context = ssl.create_default_context(cadata=ca.decode() if ca else None)
        except (ssl.SSLError, ValueError) as exc:
            raise CommandError(
                f"the cluster's certificate-authority is not a PEM certificate: {exc}"
            ) from None
    cert = creds.certificate or _data_or_file(user, "client-certificate", user_base)
    key = creds.key or _data_or_file(user, "client-key", user_base)
    if cert and key:
        _load_client_certificate(context, cert, key)
    return context


def _load_client_certificate(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """ssl loads a certificate chain only from files: a private folder, removed straight after."""
    with tempfile.TemporaryDirectory(prefix="hookline-kube-") as folder:
        cert_path, key_path = Path(folder) / "client.crt", Path(folder) / "client.key"
        for path, data in ((cert_path, cert), (key_path, key)):
            path.touch(mode=0o600)
            path.write_bytes(data)
        try:
            context.load_cert_chain(str(cert_path), str(key_path))
        except ssl.SSLError as exc:
            raise CommandError(f"the user's client certificate or key cannot be used: {exc}") from None


def _data_or_file(entry: Mapping[str, Any], key: str, base: Path) -> bytes | None:
    data = entry.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(data, validate=False)
        except ValueError:
            raise CommandError(f"{key}-data in the kubeconfig is not base64") from None
    return _read(entry[key], base, key) if entry.get(key) else None


def _read(path: str, base: Path, what: str) -> bytes:
    full = (base / Path(path).expanduser()) if not Path(path).expanduser().is_absolute() else Path(path)
    try:
        return full.expanduser().read_bytes()
    except OSError as exc:
        raise CommandError(f"the kubeconfig's {what} {full}: {exc.strerror or exc}") from None


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
