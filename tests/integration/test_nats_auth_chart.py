"""`helm template` with defaults renders NATS with auth on, each component with only its own credentials
file, and the credentials the operator's code mints carry exactly the permissions of docs' list."""

from __future__ import annotations

from typing import Any

from natsauth_helpers import render_chart

from hookline.operator.adapters.natsauth import auth_secret_data
from hookline.sender.bus.natsaccounts import AuthKeys
from hookline.sender.bus.natsjwt import decode_jwt, jwt_of_creds
from hookline.sender.bus.natsperms import SenderIdentity

SECRET = "hk-hookline-nats-auth"
CREDS_DIR = "/var/run/secrets/hookline/nats"


def one(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in render_chart() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def creds_items(pod: dict[str, Any]) -> list[str]:
    (volume,) = [v for v in pod["volumes"] if v["name"] == "nats-creds"]
    assert volume["secret"]["secretName"] == SECRET
    return sorted(item["key"] for item in volume["secret"]["items"])


def test_defaults_render_nats_with_auth_and_each_component_with_its_own_user():
    config = one("ConfigMap", "hk-hookline-nats-config")["data"]["nats-server.conf"]
    assert "include ../nats-auth/auth.conf" in config and "type: full" in config
    nats = one("StatefulSet", "hk-hookline-nats")["spec"]["template"]["spec"]
    (auth,) = [v for v in nats["volumes"] if v["name"] == "auth"]
    assert auth["secret"] == {"secretName": SECRET, "items": [{"key": "auth.conf", "path": "auth.conf"}]}

    operator = one("Deployment", "hk-hookline-operator")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in operator["containers"][0]["env"]}
    assert env["HOOKLINE_NATS_AUTH_SECRET"] == SECRET and env["HOOKLINE_NATS_AUTH_NAMESPACE"] == "hookline"

    ingest = one("Deployment", "hk-hookline-ingest")["spec"]["template"]["spec"]
    args = ingest["containers"][0]["args"]
    assert args[args.index("--nats-creds") + 1] == f"{CREDS_DIR}/ingest.creds"
    (layout,) = ingest["initContainers"]
    assert "--layout-only" in layout["args"]
    assert layout["args"][layout["args"].index("--nats-creds") + 1] == f"{CREDS_DIR}/layout.creds"
    assert creds_items(ingest) == ["ingest.creds"]  # the ingest container's only
    (layout_volume,) = [v for v in ingest["volumes"] if v["name"] == "nats-layout-creds"]
    assert [i["key"] for i in layout_volume["secret"]["items"]] == ["layout.creds"]
    assert "nats-layout-creds" not in [m["name"] for m in ingest["containers"][0]["volumeMounts"]]
    assert "nats-creds" not in [m["name"] for m in layout["volumeMounts"]]

    pool = one("StatefulSet", "hk-hookline-pool-default")["spec"]["template"]["spec"]
    assert creds_items(pool) == ["pool.creds"]
    # No credential in any ConfigMap or env value.
    for doc in render_chart():
        text = str(doc.get("data", "")) if doc["kind"] == "ConfigMap" else ""
        assert "NKEY SEED" not in text and "NATS USER JWT" not in text


def permissions(creds: str) -> dict[str, Any]:
    return decode_jwt(jwt_of_creds(creds))["nats"]


def test_the_minted_credentials_carry_exactly_the_listed_permissions():
    keys = AuthKeys.generate()
    data = auth_secret_data(keys)
    ingest = permissions(data["ingest.creds"])
    assert ingest["pub"] == {
        "allow": [
            "hookline.events.>",
            "hookline.ids.*",
            "hookline.bundled.*",
            "$JS.API.DIRECT.GET.HOOKLINE_EVENT_IDS.>",
            "$JS.API.STREAM.PURGE.HOOKLINE_EVENT_IDS",
        ]
    }
    assert ingest["sub"] == {"allow": ["_INBOX.ingest.>"]}
    assert "resp" not in ingest

    operator = permissions(data["operator.creds"])
    assert "hookline.events.>" not in operator["pub"]["allow"]
    assert not [s for s in operator["pub"]["allow"] if s.startswith("hookline.events")]
    assert operator["sub"] == {"allow": ["_INBOX.operator.>"]}

    layout = permissions(data["layout.creds"])
    assert not [s for s in layout["pub"]["allow"] if s.startswith(("hookline.", "$JS.API.CONSUMER.MSG.NEXT"))]

    pool = permissions(data["pool.creds"])
    assert not [
        s for s in pool["pub"]["allow"] if s.startswith("hookline.events") or ".DELETE.HOOKLINE_EVENTS" in s
    ]
    assert not [s for s in pool["pub"]["allow"] if s.startswith("$JS.API.CONSUMER.CREATE.HOOKLINE_EVENTS")]
    assert "$KV.HOOKLINE_POOLS.r.*.*" in pool["pub"]["allow"]  # rosters; assignments read only
    assert not [s for s in pool["pub"]["allow"] if s.startswith("$KV.HOOKLINE_POOLS.a.")]

    system = permissions(data["system.creds"])
    assert all(s.startswith("$SYS.REQ.") for s in system["pub"]["allow"])

    who = SenderIdentity("team-a", "orders", "hookline_team-a_orders")
    sender = permissions(keys.sender_creds(who, "uid"))
    assert sender["pub"] == {
        "allow": [
            "$JS.API.CONSUMER.MSG.NEXT.HOOKLINE_EVENTS.hookline_team-a_orders",
            "$JS.ACK.HOOKLINE_EVENTS.hookline_team-a_orders.>",
            "$JS.API.CONSUMER.INFO.HOOKLINE_EVENTS.hookline_team-a_orders",
            "$JS.API.STREAM.INFO.HOOKLINE_EVENTS",
            "$JS.API.STREAM.INFO.HOOKLINE_DEAD_LETTERS",
            "$JS.API.STREAM.INFO.HOOKLINE_FAILED_ATTEMPTS",
            "$JS.API.STREAM.INFO.KV_HOOKLINE_HEALTH",
            "$JS.API.STREAM.INFO.KV_hookline-consumer-floors",
            "$KV.HOOKLINE_HEALTH.team-a.orders",
            "$JS.API.DIRECT.GET.KV_HOOKLINE_HEALTH.$KV.HOOKLINE_HEALTH.team-a.orders",
            "$KV.hookline-consumer-floors.hookline_team-a_orders",
            "$JS.API.DIRECT.GET.KV_hookline-consumer-floors.$KV.hookline-consumer-floors.hookline_team-a_orders",
            "$KV.hookline-consumer-floors.recovery.hookline_team-a_orders",
            "$JS.API.DIRECT.GET.KV_hookline-consumer-floors.$KV.hookline-consumer-floors.recovery.hookline_team-a_orders",
            "hookline.attempts.team-a.orders",
            "hookline.dead.team-a.orders",
            "hookline.failed.hookline_team-a_orders.*",
            "$JS.API.DIRECT.GET.HOOKLINE_FAILED_ATTEMPTS.hookline.failed.hookline_team-a_orders.*",
            "$JS.API.STREAM.PURGE.HOOKLINE_FAILED_ATTEMPTS",
        ]
    }
    # Its inbox, and its own consumer's advisories (deleted, created, paused: the watch wakes on them).
    assert sender["sub"] == {
        "allow": [
            "_INBOX.hookline_team-a_orders.>",
            "$JS.EVENT.ADVISORY.CONSUMER.*.HOOKLINE_EVENTS.hookline_team-a_orders",
        ]
    }
    forbidden = (
        "CONSUMER.CREATE",
        "CONSUMER.DURABLE",
        "CONSUMER.DELETE",
        "hookline.events",
        "HOOKLINE_POOLS",
    )
    assert not [s for s in sender["pub"]["allow"] if any(f in s for f in forbidden)]
