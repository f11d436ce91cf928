"""NATS over TLS (chart nats.tls) with auth on: a hookline client connects when it verifies the server
with the CA it is given, and refuses a server whose certificate another CA signed."""

from __future__ import annotations

import pytest
import trustme
from natsauth_helpers import start_authed_nats

from hookline.sender import bus
from hookline.sender.bus.connection import BusAuth, BusUnavailable
from hookline.sender.bus.natsperms import inbox_prefix

TLS_BLOCK = """
tls {
  cert_file: "%s"
  key_file: "%s"
  timeout: 5
}
"""


@pytest.fixture
def tls_nats(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    chain = tmp_path / "chain.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    # The chart's rendered config with its tls block, as nats.tls.enabled renders it.
    server = start_authed_nats(tmp_path, tls_block=TLS_BLOCK % (chain, tmp_path / "server.key"))
    yield server, tmp_path / "ca.crt"
    server.server.close()


@pytest.mark.slow
async def test_clients_verify_the_server_with_the_ca_they_are_given(tls_nats):
    server, ca_file = tls_nats
    auth = BusAuth(
        creds_file=str(server.creds["operator"]),
        tls_ca_file=str(ca_file),
        inbox_prefix=inbox_prefix("operator"),
    )
    nc = await bus.connect(server.url, auth=auth, initial_attempts=1)
    try:
        info = await nc.jetstream().account_info()
        assert info.limits.max_streams == -1
    finally:
        await nc.close()
    other = trustme.CA()
    other.cert_pem.write_to_path(str(ca_file.with_name("other.crt")))
    wrong = BusAuth(
        creds_file=str(server.creds["operator"]),
        tls_ca_file=str(ca_file.with_name("other.crt")),
        inbox_prefix=inbox_prefix("operator"),
    )
    with pytest.raises(BusUnavailable, match="certificate verify failed"):
        await bus.connect(server.url, auth=wrong, initial_attempts=1, connect_timeout=2)
    with pytest.raises(BusUnavailable, match="NATS CA file"):
        await bus.connect(server.url, auth=BusAuth(tls_ca_file=str(ca_file.with_name("missing.crt"))))
