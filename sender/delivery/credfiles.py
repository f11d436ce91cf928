"""A dedicated sender's credentials from the Secret files the operator mounts into its pod.

The config names the files (``signingSecretFile(s)``, ``secretHeaderFiles``, ``tlsFiles``), never
their content. Errors name the file and what is wrong with it, never a value read from it.
"""

from __future__ import annotations

from pathlib import Path

from hookline.sender.model.config import SenderConfig
from hookline.sender.model.credentials import Credentials, TLSMaterial
from hookline.sender.model.signingkeys import SigningKey, parse_signing_key


class CredentialFileError(ValueError):
    """A mounted Secret file is missing or unusable; the message names it."""


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CredentialFileError(
            f"cannot read {what} {path}: {exc.strerror or exc}; check the Secret is mounted"
        ) from None


def _key(path: str, what: str) -> SigningKey:
    try:
        return parse_signing_key(_read(path, what).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, CredentialFileError):
            raise
        raise CredentialFileError(f"{what} {path}: {exc}") from None


def read_credentials(cfg: SenderConfig) -> Credentials | None:
    """Everything secret the config's files hold; None when it names none."""
    keys: list[SigningKey] = []
    if cfg.signing_secret_file:
        keys.append(_key(cfg.signing_secret_file, "signingSecretFile"))
    for path in cfg.signing_secret_files or ():
        keys.append(_key(path, "signingSecretFiles"))
    headers = []
    for name, path in (cfg.secret_header_files or {}).items():
        value = _read(path, f"secretHeaderFiles[{name}]").decode("utf-8", "replace").strip()
        if not value or any(ch in value for ch in "\r\n\x00"):
            raise CredentialFileError(
                f"secretHeaderFiles[{name}] {path}: the value is empty or holds a line break or NUL"
            )
        headers.append((name, value))
    tls = None
    if cfg.tls_files is not None:
        files = cfg.tls_files
        tls = TLSMaterial(
            _read(files.cert_file, "tlsFiles.certFile") if files.cert_file else None,
            _read(files.key_file, "tlsFiles.keyFile") if files.key_file else None,
            _read(files.ca_file, "tlsFiles.caFile") if files.ca_file else None,
        )
    creds = Credentials(tuple(keys), tuple(headers), tls)
    return creds if creds else None
