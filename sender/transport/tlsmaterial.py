"""The TLS context of one Webhook's requests: its client certificate (mTLS) and its extra trusted CAs.

Python's ssl loads a certificate chain from files only, so the PEM text goes through an anonymous
in-memory file (memfd, read through /proc/self/fd) and never touches a disk; where memfd is missing a
0600 file in a private temporary directory is removed right after loading. Verification stays on
(system CAs plus the bundle); only the chain the receiver sees changes.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator

from hookline.sender.model.credentials import TLSMaterial


@contextlib.contextmanager
def _pem_file(data: bytes) -> Iterator[str]:
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd("hookline-tls", 0)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="hookline-tls-") as folder:
        path = os.path.join(folder, "pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        yield path


def client_tls_context(material: TLSMaterial | None) -> ssl.SSLContext | bool:
    """A verifying context with the Webhook's client certificate and CAs; True (the default) without."""
    if material is None or not (material.ca_pem or material.cert_pem):
        return True
    context = ssl.create_default_context()
    if material.ca_pem:
        try:
            context.load_verify_locations(cadata=material.ca_pem.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise ValueError(
                f"spec.tls.caBundleRef: not PEM CA certificates ({exc.__class__.__name__})"
            ) from None
    if material.cert_pem:
        if not material.key_pem:
            raise ValueError("spec.tls.clientCertificateSecretRef: the Secret has tls.crt but no tls.key")
        try:
            with _pem_file(material.cert_pem) as cert, _pem_file(material.key_pem) as key:
                context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                "spec.tls.clientCertificateSecretRef: tls.crt and tls.key do not load as a PEM certificate "
                f"and its key ({exc.__class__.__name__})"
            ) from None
    return context
