"""The operator's NATS accounts through the real operator and the strict API emulator: it makes the
install's auth Secret, the NATS server starts from that Secret's auth.conf (as the chart's pod does),
each verified Webhook's sender gets its own NATS user in a Secret it mounts, and the user is revoked
on the server when the Webhook is deleted."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from types import SimpleNamespace

import nats
import pytest
import yaml
from natsauth_helpers import chart_like_config
from operator_helpers import (
    CONFIGMAPS,
    DEPLOYMENTS,
    NS,
    SECRETS,
    WEBHOOKS,
    api_path,
    condition,
    create_webhook,
    wait_for,
)

from hookline.operator.rules.natscreds import NatsAuthSettings
from hookline.sender.bus.natsjwt import decode_jwt, jwt_of_creds
from hookline.sender.bus.natsperms import SenderIdentity, sender_permissions
from hookline.sender.bus.natsserver import EmbeddedNats, free_port
from hookline.sender.model.config import consumer_name

AUTH_SECRET = "hookline-nats-auth"


@pytest.fixture
def nats_server(tmp_path):
    """Not started yet: its config comes from the Secret the operator makes (the chart's NATS pod waits
    for it the same way)."""
    holder = SimpleNamespace(port=free_port(), server=None)
    holder.url = f"nats://127.0.0.1:{holder.port}"
    yield holder
    if holder.server is not None:
        holder.server.close()


def secret_files(secret: dict) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


async def test_the_operator_makes_the_accounts_mints_each_senders_user_and_revokes_it(
    cluster, site, start_operator, nats_server, tmp_path: Path
):
    await start_operator(
        nats_auth=NatsAuthSettings(auth_secret=AUTH_SECRET, namespace=NS, renew_every_seconds=0.5)
    )
    auth = await wait_for(lambda: cluster.get(SECRETS, AUTH_SECRET), "the install's NATS auth Secret")
    files = secret_files(auth)
    assert {"operator.creds", "ingest.creds", "layout.creds", "pool.creds", "auth.conf"} <= set(files)
    (tmp_path / "auth").mkdir()
    (tmp_path / "auth" / "auth.conf").write_text(files["auth.conf"])
    (tmp_path / "nats-server.conf").write_text(chart_like_config(tmp_path))
    nats_server.server = EmbeddedNats(
        tmp_path / "store",
        port=nats_server.port,
        config_file=tmp_path / "nats-server.conf",
        log_file=tmp_path / "nats.log",
    ).start()

    await create_webhook(cluster, "tenant", url=site.url("/hooks/tenant.php"), events=["open"])
    status = await wait_for(
        lambda: ((cluster.get(WEBHOOKS, "tenant") or {}).get("status") or {}).get("verification"), "a token"
    )
    site.files[f"/hooks/{status['fileName']}"] = status["content"]
    deployment = await wait_for(
        lambda: (
            condition(cluster.get(WEBHOOKS, "tenant"), "Verified").get("status") == "True"
            and cluster.get(DEPLOYMENTS, "tenant-sender")
        ),
        "Verified and the sender Deployment",
    )
    secret = await wait_for(lambda: cluster.get(SECRETS, "tenant-sender-nats"), "the sender's NATS Secret")
    webhook = cluster.get(WEBHOOKS, "tenant")
    assert secret["metadata"]["ownerReferences"][0]["uid"] == webhook["metadata"]["uid"]
    assert secret["metadata"]["labels"]["hookline.io/webhook"] == "tenant"
    creds = secret_files(secret)["user.creds"]
    claims = decode_jwt(jwt_of_creds(creds))
    who = SenderIdentity(NS, "tenant", consumer_name(NS, "tenant"))
    assert claims["nats"]["pub"]["allow"] == list(sender_permissions(who).pub)
    assert claims["nats"]["sub"]["allow"] == list(sender_permissions(who).sub)
    assert claims["nats"]["sub"]["allow"][0] == f"_INBOX.{who.consumer}.>"
    assert secret["metadata"]["annotations"]["hookline.io/nats-user"] == claims["sub"]

    # The pod mounts it; the ConfigMap names the path, never the credentials.
    pod = deployment["spec"]["template"]["spec"]
    assert {
        "name": "nats-credentials",
        "secret": {"secretName": "tenant-sender-nats", "defaultMode": 0o440},
    } in pod["volumes"]
    config = yaml.safe_load(cluster.get(CONFIGMAPS, "tenant-sender")["data"]["sender.yaml"])
    assert config["nats"]["credsFile"] == "/etc/hookline/nats/user.creds"
    text = yaml.safe_dump(config)
    seed = creds.split("-----BEGIN USER NKEY SEED-----\n", 1)[1].split("\n", 1)[0]
    assert seed.startswith("SU") and seed not in text and jwt_of_creds(creds) not in text

    # A third of its life left: the renewal (a loop every few hours) mints it again, same user.
    expires = int(secret["metadata"]["annotations"]["hookline.io/nats-expires"])
    assert expires > time.time() + 80 * 86400
    await cluster.call(
        "PATCH",
        api_path(SECRETS, name="tenant-sender-nats"),
        {"metadata": {"annotations": {"hookline.io/nats-expires": str(int(time.time()) + 60)}}},
    )
    again = await wait_for(
        lambda: (
            (s := cluster.get(SECRETS, "tenant-sender-nats"))
            and int(s["metadata"]["annotations"]["hookline.io/nats-expires"]) > time.time() + 80 * 86400
            and s
        ),
        "the sender's NATS user minted again",
    )
    assert again["metadata"]["annotations"]["hookline.io/nats-user"] == claims["sub"]

    # The minted user reads its own consumer (made by the operator's own user).
    path = tmp_path / "tenant.creds"
    path.write_text(creds)
    nc = await nats.connect(
        nats_server.url, user_credentials=str(path), inbox_prefix=f"_INBOX.{who.consumer}"
    )
    info = await nc.jetstream().consumer_info("HOOKLINE_EVENTS", who.consumer)
    assert info.name == who.consumer

    # The operator's own user did everything it does (consumers, health watch, buckets) unrefused.
    log = (tmp_path / "nats.log").read_text()
    refused = [
        line for line in log.splitlines() if "Publish Violation" in line or "Subscription Violation" in line
    ]
    assert not refused, refused

    await cluster.call("DELETE", api_path(WEBHOOKS, name="tenant"))
    await wait_for(lambda: nc.is_closed, "the deleted Webhook's sender connection closed by the server")
    with pytest.raises(Exception, match=r"Authorization Violation|no servers"):
        await nats.connect(
            nats_server.url, user_credentials=str(path), allow_reconnect=False, max_reconnect_attempts=0
        )
