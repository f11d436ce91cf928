"""Signing keys, key ids, credentials and where a dedicated sender finds them: pure, no I/O."""

from __future__ import annotations

import base64

import pytest

from hookline.api import SpecError, parse_webhook_spec
from hookline.operator.rules.credmounts import credential_mounts, referenced_names
from hookline.operator.rules.signingstatus import jwks, signing_status
from hookline.sender.model.credentials import Credentials, TLSMaterial, as_credentials
from hookline.sender.model.httpsig import content_digest
from hookline.sender.model.signingkeys import generate_key_text, parse_signing_key, public_key_text

# RFC 8037 appendix A: an Ed25519 key, its public "x" and its RFC 7638 thumbprint.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_KID = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
HMAC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_an_ed25519_key_has_the_rfc_7638_thumbprint_as_its_key_id():
    seed = base64.urlsafe_b64decode(RFC8037_D + "=")
    key = parse_signing_key("whsk_" + base64.b64encode(seed).decode())
    assert key.algorithm == "ed25519" and key.key_id == RFC8037_KID
    assert key.jwk() == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": RFC8037_X,
        "kid": RFC8037_KID,
        "alg": "EdDSA",
        "use": "sig",
    }
    assert (
        public_key_text(key) == "whpk_" + base64.b64encode(base64.urlsafe_b64decode(RFC8037_X + "=")).decode()
    )


def test_an_hmac_key_is_named_by_a_one_way_fingerprint_and_has_nothing_public():
    key = parse_signing_key(HMAC)
    assert key.algorithm == "hmac-sha256" and key.key_id.startswith("hmac-") and len(key.key_id) == 21
    assert key.jwk() is None and HMAC[6:] not in key.key_id and HMAC[6:] not in repr(key)


@pytest.mark.parametrize("algorithm", ["ed25519", "hmac-sha256"])
def test_generated_keys_parse_back(algorithm):
    assert parse_signing_key(generate_key_text(algorithm)).algorithm == algorithm


@pytest.mark.parametrize(
    "text", ["whsk_!!!", "whsk_" + base64.b64encode(b"short").decode(), "whsec_c2hvcnQ="]
)
def test_bad_keys_are_refused_without_repeating_them(text):
    with pytest.raises(ValueError) as caught:
        parse_signing_key(text)
    assert text not in str(caught.value)


def test_credentials_survive_sealing_and_never_show_values_in_their_repr():
    creds = Credentials(
        keys=(parse_signing_key(HMAC), parse_signing_key(generate_key_text("ed25519"))),
        headers=(("Authorization", "Bearer hidden-value"),),
        tls=TLSMaterial(b"CERT", b"KEY", b"CA"),
    )
    assert Credentials.from_bytes(creds.to_bytes()) == creds
    assert "hidden-value" not in repr(creds) and "CERT" not in repr(creds)
    legacy = Credentials.from_bytes(b"0123456789abcdef")  # a pool entry of before: one raw HMAC key
    assert legacy == as_credentials(b"0123456789abcdef") and legacy.keys[0].algorithm == "hmac-sha256"


def test_content_digest_is_rfc_9530_sha_256():
    # RFC 9530 section B.1's example body {"hello": "world"}
    assert content_digest(b'{"hello": "world"}\n') == "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"


SPEC = {"url": "https://shop.example/h.php", "events": ["open"]}


def test_signing_needs_exactly_one_way_to_name_its_keys():
    with pytest.raises(SpecError, match="not both"):
        parse_webhook_spec(
            {
                **SPEC,
                "signing": {
                    "secretRef": {"name": "a", "key": "k"},
                    "secretRefs": [{"name": "a", "key": "k"}],
                },
            }
        )
    with pytest.raises(SpecError, match="needs secretRef, secretRefs or generate"):
        parse_webhook_spec({**SPEC, "signing": {"scheme": "HTTPMessageSignatures"}})
    with pytest.raises(SpecError, match="given twice"):
        header = {"name": "X-Team", "valueFrom": {"secretKeyRef": {"name": "t", "key": "t"}}}
        parse_webhook_spec({**SPEC, "headers": {"x-team": "crm"}, "secretHeaders": [header]})


def test_a_dedicated_sender_mounts_each_secret_once_and_its_config_names_files_only():
    spec = parse_webhook_spec(
        {
            **SPEC,
            "signing": {
                "secretRefs": [{"name": "keys", "key": "old"}, {"name": "keys", "key": "new"}],
                "generate": "ed25519",
            },
            "secretHeaders": [
                {"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "token"}}}
            ],
            "tls": {
                "clientCertificateSecretRef": {"name": "client-tls"},
                "caBundleRef": {"name": "private-ca"},
            },
        }
    )
    mounts = credential_mounts("shop", spec)
    secrets = sorted(v["secret"]["secretName"] for v in mounts.volumes if "secret" in v)
    assert secrets == ["client-tls", "keys", "shop-signing"]
    assert [v["configMap"]["name"] for v in mounts.volumes if "configMap" in v] == ["private-ca"]
    assert mounts.config["signingSecretFiles"] == [
        "/var/run/secrets/hookline/s/0/old",
        "/var/run/secrets/hookline/s/0/new",
        "/var/run/secrets/hookline/s/1/signing-key",
    ]
    assert mounts.config["secretHeaderFiles"] == {"Authorization": "/var/run/secrets/hookline/s/0/token"}
    assert mounts.config["tlsFiles"] == {
        "certFile": "/var/run/secrets/hookline/s/2/tls.crt",
        "keyFile": "/var/run/secrets/hookline/s/2/tls.key",
        "caFile": "/var/run/secrets/hookline/ca/ca.crt",
    }
    assert referenced_names("shop", spec) == {"keys", "shop-signing", "client-tls", "private-ca"}


def test_a_lone_secret_ref_keeps_the_mount_it_always_had():
    spec = parse_webhook_spec({**SPEC, "signing": {"secretRef": {"name": "hook-secret", "key": "secret"}}})
    mounts = credential_mounts("shop", spec)
    assert mounts.config == {"signingSecretFile": "/var/run/secrets/hookline/signing/secret"}
    assert [v["name"] for v in mounts.volumes] == ["signing"]


def test_status_signing_lists_key_ids_and_public_keys_only():
    ed = parse_signing_key(generate_key_text("ed25519"))
    spec = parse_webhook_spec(
        {**SPEC, "signing": {"secretRef": {"name": "s", "key": "k"}, "generate": "ed25519"}}
    )
    part = signing_status("shop", spec, Credentials(keys=(parse_signing_key(HMAC), ed)), None)
    assert [k["secret"] for k in part["keys"]] == ["s/k", "shop-signing/signing-key"]
    assert HMAC[6:] not in str(part)
    assert jwks([part]) == {"keys": [ed.jwk()]}


def test_dev_mode_signs_with_every_key_and_sends_secret_headers_from_the_secret_manifests(tmp_path):
    from hookline.manifests import load_manifests

    (tmp_path / "hook.yaml").write_text(
        """
apiVersion: v1
kind: Secret
metadata: {name: keys, namespace: default}
stringData:
  old: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
  new: whsec_TkVXTkVXTkVXTkVXTkVXTkVXTkVXTkVXTkVX
  token: Bearer t0k
---
apiVersion: hookline.io/v1alpha1
kind: Webhook
metadata: {name: shop, namespace: default}
spec:
  url: http://127.0.0.1:9/hook
  events: [open]
  signing: {secretRefs: [{name: keys, key: old}, {name: keys, key: new}]}
  secretHeaders: [{name: Authorization, valueFrom: {secretKeyRef: {name: keys, key: token}}}]
"""
    )
    (hook,) = load_manifests(tmp_path).webhooks
    assert hook.signing_secret == HMAC
    assert hook.credentials is not None and len(hook.credentials.keys) == 2
    assert hook.credentials.headers == (("Authorization", "Bearer t0k"),)


def test_malformed_sealed_credentials_are_refused_without_their_content():
    with pytest.raises(ValueError, match="not in the format") as caught:
        Credentials.from_bytes(b'HLC1{"keys": [{"alg": "ed25519"}], "headers": [["A", "secret-value"]]}')
    assert "secret-value" not in str(caught.value)


def test_hookline_verify_takes_an_ed25519_public_key_for_v1a_signatures():
    from hookline.sender.model.signing import SignatureError, verify
    from hookline.sender.model.signingkeys import sign_standard

    ed = parse_signing_key(generate_key_text("ed25519"))
    other = parse_signing_key(generate_key_text("ed25519"))
    headers = {"webhook-id": "e1", "webhook-timestamp": "1700000000"}
    headers["webhook-signature"] = sign_standard((ed,), "e1", 1_700_000_000, b"{}")
    verify(str(public_key_text(ed)), headers, b"{}", now=1_700_000_000)
    with pytest.raises(SignatureError):
        verify(str(public_key_text(other)), headers, b"{}", now=1_700_000_000)
    with pytest.raises(SignatureError):
        verify(str(public_key_text(ed)), headers, b"{ }", now=1_700_000_000)
    both = {
        **headers,
        "webhook-signature": sign_standard((parse_signing_key(HMAC), other), "e1", 1_700_000_000, b"{}"),
    }
    verify([HMAC, str(public_key_text(ed))], both, b"{}", now=1_700_000_000)  # the v1 matches
