"""Where the CLI's NATS commands (`hookline attempts`, `hookline redrive`) find NATS, in this order:
--nats-url; env HOOKLINE_NATS_URL; the URL a running `hookline dev` wrote to .hookline-dev/nats-url in
the current directory (saying so, since it is not what was asked); nats://127.0.0.1:4222.

Dev mode starts its nats-server on a free port, so without the file every command would need the URL
copied from its output. It writes the file when NATS is up and removes it when it stops.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from hookline.sender.bus.connection import CREDS_ENV, TLS_CA_ENV, BusAuth
from hookline.sender.model.config import DEFAULT_NATS_URL, NATS_URL_ENV

DEV_STATE_DIR = ".hookline-dev"  # hookline dev's default --state-dir, relative to where it runs
NATS_URL_FILE = "nats-url"
NATS_URL_HELP = (
    f"NATS server URL (default: env {NATS_URL_ENV}, else the NATS of a hookline dev running in this "
    f"directory, from {DEV_STATE_DIR}/{NATS_URL_FILE}, else {DEFAULT_NATS_URL})"
)


def write_dev_nats_url(state_dir: Path, url: str) -> Path:
    """Leave dev mode's NATS URL where the CLI looks for it."""
    path = state_dir / NATS_URL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{NATS_URL_FILE}.tmp")
    tmp.write_text(url + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def remove_dev_nats_url(state_dir: Path, url: str) -> None:
    """Remove the file when it still names `url` (another dev mode may have written its own since)."""
    path = state_dir / NATS_URL_FILE
    try:
        if path.read_text(encoding="utf-8").strip() == url:
            path.unlink()
    except OSError:
        pass


def cli_nats_url(
    given: str | None,
    command: str,
    *,
    environ: Mapping[str, str] = os.environ,
    cwd: Path | None = None,
    err: TextIO = sys.stderr,
) -> str:
    """The NATS URL a one-shot command uses (the order is in the module's docstring)."""
    if given:
        return given
    if environ.get(NATS_URL_ENV):
        return environ[NATS_URL_ENV]
    path = (cwd or Path.cwd()) / DEV_STATE_DIR / NATS_URL_FILE
    try:
        url = path.read_text(encoding="utf-8").strip()
    except OSError:
        url = ""
    if url:
        print(
            f"hookline {command}: using the NATS of hookline dev, {url} (from {path}; "
            f"--nats-url or {NATS_URL_ENV} choose another)",
            file=err,
        )
        return url
    return DEFAULT_NATS_URL


def add_nats_auth_arguments(parser: argparse.ArgumentParser) -> None:
    """--nats-creds and --nats-ca: paths of mounted files, never the credentials themselves."""
    parser.add_argument(
        "--nats-creds",
        metavar="FILE",
        help=f"NATS user credentials (.creds: JWT and seed; default: env {CREDS_ENV}; none: anonymous)",
    )
    parser.add_argument(
        "--nats-ca",
        metavar="FILE",
        help=f"CA bundle that signed the NATS server's TLS certificate (env {TLS_CA_ENV})",
    )


def nats_auth_of(
    args: argparse.Namespace,
    *,
    creds_file: str | None = None,
    tls_ca_file: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> BusAuth:
    """Flags, then the given defaults (a config's), then the env vars."""
    return BusAuth.from_env(
        environ,
        creds_file=getattr(args, "nats_creds", None) or creds_file,
        tls_ca_file=getattr(args, "nats_ca", None) or tls_ca_file,
    )
