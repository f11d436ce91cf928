"""`hookline ingest`'s producer authentication and TLS flags: which tokens it takes (sender/ingest/
producers.py), that it refuses to start with none unless told `--insecure-no-auth`, and its server
certificate. Kept apart from the command's stream flags (sender/cmd/ingest.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path

from hookline.durations import duration_arg
from hookline.sender.ingest.producers import ProducerAuth, ProducerToken, TokensError, load_tokens_file

TOKEN_ENV = "HOOKLINE_INGEST_TOKEN"
TOKENS_FILE_ENV = "HOOKLINE_INGEST_TOKENS_FILE"


def add_producer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tokens-file",
        default=os.environ.get(TOKENS_FILE_ENV) or None,
        metavar="FILE",
        help="producer tokens, each with a name and the databases it may publish for (YAML/JSON: "
        f"tokens: [{{name, token | sha256 | tokenFile, databases}}]; env {TOKENS_FILE_ENV})",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"one bearer token for every database (else env {TOKEN_ENV}); named 'default'",
    )
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="accept events from anyone: without a token ingest refuses to start unless this is given",
    )
    parser.add_argument(
        "--tokens-reload",
        type=duration_arg,
        default=10.0,
        metavar="DURATION",
        help="read the token files again this often; a changed Secret takes effect without a restart "
        "(default 10s)",
    )
    parser.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate (PEM chain)")
    parser.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM)")


def read_token(token_file: str | None, env: Mapping[str, str] = os.environ) -> bytes | None:
    """The single bearer token from a file (Kubernetes Secret mount) or the environment, or None."""
    if token_file:
        try:
            text = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TokensError(f"cannot read --token-file {token_file}: {exc.strerror}") from None
        if not text:
            raise TokensError(f"--token-file {token_file} is empty")
        return text.encode()
    value = env.get(TOKEN_ENV, "").strip()
    return value.encode() if value else None


def producer_auth_of(
    args: argparse.Namespace, log: logging.Logger, env: Mapping[str, str] = os.environ
) -> ProducerAuth:
    """The producers from the flags; TokensError when there are none and auth was not turned off on
    purpose, or when it was turned off and tokens were given too. A WARNING on every open start."""
    producers: list[ProducerToken] = []
    single = read_token(getattr(args, "token_file", None), env)
    if single is not None:
        producers.extend(ProducerAuth.single(single).producers)
    if getattr(args, "tokens_file", None):
        producers.extend(load_tokens_file(args.tokens_file))
    if getattr(args, "insecure_no_auth", False):
        if producers:
            raise TokensError(
                "--insecure-no-auth and producer tokens were both given; drop one (tokens: "
                f"{', '.join(p.name for p in producers)})"
            )
        log.warning(
            "ingest: producer authentication is OFF (--insecure-no-auth): anyone who reaches this port "
            "can publish events for every database"
        )
        return ProducerAuth.open()
    if not producers:
        raise TokensError(
            "no producer token: give --tokens-file, --token-file or "
            f"{TOKEN_ENV}, or --insecure-no-auth to accept events from anyone"
        )
    return ProducerAuth(producers)


def _identities(auth: ProducerAuth) -> set[tuple[str, bytes, frozenset[str]]]:
    return {(p.name, p.digest, p.databases) for p in auth.producers}


async def follow_token_files(
    args: argparse.Namespace,
    current: Callable[[], ProducerAuth],
    swap: Callable[[ProducerAuth], None],
    log: logging.Logger,
) -> None:
    """Read the token files again every --tokens-reload and swap in what changed (a rotated Secret:
    the kubelet updates the mounted file). A file that no longer reads keeps the tokens in use and is
    logged (once per problem); tokens are never logged, their names are."""
    if getattr(args, "insecure_no_auth", False) or not (args.tokens_file or args.token_file):
        return
    reported = ""
    while True:
        await asyncio.sleep(args.tokens_reload)
        try:
            fresh = producer_auth_of(args, log)
        except TokensError as exc:
            if str(exc) != reported:
                reported = str(exc)
                log.error("ingest: the producer tokens were not reloaded: %s; the ones in use stay", exc)
            continue
        reported = ""
        if _identities(fresh) != _identities(current()):
            swap(fresh)
            log.info("ingest: producer tokens reloaded: %s", ", ".join(p.name for p in fresh.producers))


def tls_context_of(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server TLS context of --tls-cert/--tls-key (both or neither), or None for plain HTTP."""
    cert, key = getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    if not cert and not key:
        return None
    if not cert or not key:
        raise TokensError("--tls-cert and --tls-key go together: give both, or neither")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TokensError(f"cannot load --tls-cert {cert} / --tls-key {key}: {exc}") from None
    return context
