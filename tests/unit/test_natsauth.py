"""The pure parts of NATS auth: JWTs signed by nkeys, claims shapes, revocations kept only as long as
a JWT they refuse can live, and when a sender's Secret is minted again."""

from __future__ import annotations

import base64

import nkeys

from hookline.operator.rules.natscreds import (
    EXPIRES_ANNOTATION,
    PERMISSIONS_ANNOTATION,
    USER_ANNOTATION,
    MintedUser,
    needs_mint,
    secret,
)
from hookline.sender.bus.natsaccounts import AuthKeys, prune_revocations
from hookline.sender.bus.natsjwt import Permissions, decode_jwt, jwt_of_creds, new_key
from hookline.sender.bus.natsperms import SenderIdentity


def test_a_user_jwt_is_signed_by_the_account_signing_key_and_names_its_account():
    keys = AuthKeys.generate()
    who = SenderIdentity("team-a", "orders", "hookline_team-a_orders")
    creds = keys.sender_creds(who, "uid-1", expires_at=2_000_000_000)
    token = jwt_of_creds(creds)
    header, body, signature = token.split(".")
    claims = decode_jwt(token)
    assert claims["iss"] == keys.signer.public and claims["nats"]["issuer_account"] == keys.account.public
    assert claims["sub"] == keys.sender_user(who, "uid-1").public and claims["exp"] == 2_000_000_000
    signer = nkeys.from_seed(keys.signer.seed.encode())
    assert signer.verify(f"{header}.{body}".encode(), base64.urlsafe_b64decode(signature + "=="))
    assert keys.signer.seed not in repr(keys.signer)


def test_the_sender_key_is_stable_per_webhook_uid_and_differs_for_a_new_webhook():
    keys = AuthKeys.generate()
    who = SenderIdentity("team-a", "orders", "hookline_team-a_orders")
    assert keys.sender_user(who, "uid-1") == keys.sender_user(who, "uid-1")
    assert keys.sender_user(who, "uid-1").public != keys.sender_user(who, "uid-2").public


def test_empty_allow_lists_deny_everything():
    assert Permissions().claims() == {"pub": {"deny": [">"]}, "sub": {"deny": [">"]}}


def test_account_jwt_carries_jetstream_signing_keys_and_revocations():
    keys = AuthKeys.generate()
    nats = decode_jwt(keys.account_jwt({"UABC": 5}))["nats"]
    assert nats["signing_keys"] == [keys.signer.public]
    assert nats["revocations"] == {"UABC": 5}
    assert nats["limits"]["disk_storage"] == -1
    assert decode_jwt(keys.operator_jwt())["nats"]["system_account"] == keys.system.public


def test_revocations_are_pruned_once_every_jwt_they_refuse_has_expired():
    kept = prune_revocations({"UOLD": 100, "UNEW": 900}, now=1000, lifetime=500)
    assert kept == {"UNEW": 900}
    assert prune_revocations({"UOLD": 100}, now=10**9, lifetime=None) == {"UOLD": 100}


def test_the_secret_is_minted_again_when_user_permissions_or_a_third_of_the_life_is_left():
    user = MintedUser("creds", new_key("user").public, "digest", expires_at=1000 + 900)
    have = secret({"uid": "x"}, "ns", "orders", {}, user, None)
    assert have["metadata"]["annotations"][EXPIRES_ANNOTATION] == "1900"
    assert not needs_mint(have, user.public, "digest", None, now=1000, lifetime=900)
    assert needs_mint(have, user.public, "digest", None, now=1700, lifetime=900)  # 200 s < 300 s left
    assert needs_mint(have, "UOTHER", "digest", None, now=1000, lifetime=900)
    assert needs_mint(have, user.public, "other", None, now=1000, lifetime=900)
    assert needs_mint(have, user.public, "digest", "-----BEGIN CERTIFICATE-----", now=1000, lifetime=900)
    assert needs_mint(None, user.public, "digest", None)
    assert set(have["metadata"]["annotations"]) == {
        USER_ANNOTATION,
        PERMISSIONS_ANNOTATION,
        EXPIRES_ANNOTATION,
    }
    assert "creds" not in repr(user)
