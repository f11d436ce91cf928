"""Standard Webhooks signatures, cross-checked both ways against the reference `standardwebhooks` package."""

from __future__ import annotations

import base64
import os
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from hookline import USER_AGENT
from hookline.sender.model.signing import (
    SignatureError,
    header_name_problem,
    parse_secret,
    request_headers,
    sign,
    verify,
)

KEY = os.urandom(32)
SECRET = "whsec_" + base64.b64encode(KEY).decode()
OTHER_KEY = os.urandom(32)
OTHER_SECRET = "whsec_" + base64.b64encode(OTHER_KEY).decode()
BODY = b"fields[email]=jane%40example.com&interests[]=shoes"


def signed_headers(key=KEY, msg_id="evt_1", ts=None, body=BODY):
    ts = int(time.time()) if ts is None else ts
    return request_headers(msg_id, ts, "application/x-www-form-urlencoded", body, key, None)


def test_reference_library_verifies_our_signature():
    headers = signed_headers()
    Webhook(SECRET).verify(BODY, headers, json_parse=False)  # raises if the signature is wrong


def test_reference_library_rejects_our_signature_with_another_secret():
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(BODY, signed_headers(), json_parse=False)


def test_we_verify_the_reference_library_signature():
    now = datetime.now(UTC).replace(microsecond=0)
    body = '{"type":"open","recipient":"zoë@example.com"}'
    signature = Webhook(SECRET).sign("msg_abc", now, body)
    headers = {
        "webhook-id": "msg_abc",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    verify(SECRET, headers, body.encode())
    assert sign(KEY, "msg_abc", int(now.timestamp()), body.encode()) == signature


def test_signature_format_is_v1_base64_hmac_sha256():
    value = sign(KEY, "id", 1_700_000_000, b"body")
    version, _, digest = value.partition(",")
    assert version == "v1"
    assert len(base64.b64decode(digest, validate=True)) == 32


def test_headers_carry_id_timestamp_signature_user_agent_and_content_type():
    headers = request_headers("evt_9", 1_700_000_000, "application/json", b"{}", KEY, {"X-Team": "crm"})
    assert headers["webhook-id"] == "evt_9"
    assert headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["User-Agent"] == USER_AGENT == "hookline/0.1.0"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Team"] == "crm"


def test_without_a_key_there_is_no_signature_header():
    headers = request_headers("evt_9", 1_700_000_000, "application/json", b"{}", None, None)
    assert "webhook-signature" not in headers
    assert headers["webhook-id"] == "evt_9"


def test_rotation_sends_one_signature_per_key_and_either_secret_verifies():
    ts = int(time.time())
    headers = request_headers("evt_r", ts, "application/json", BODY, [KEY, OTHER_KEY], None)
    assert len(headers["webhook-signature"].split(" ")) == 2
    verify(SECRET, headers, BODY)
    verify(OTHER_SECRET, headers, BODY)
    Webhook(OTHER_SECRET).verify(BODY, headers, json_parse=False)


def test_receiver_holding_old_and_new_secret_accepts_either():
    headers = signed_headers(key=OTHER_KEY)
    verify([SECRET, OTHER_SECRET], headers, BODY)


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda h, b: (dict(h, **{"webhook-id": "evt_2"}), b), "no signature matches"),
        (lambda h, b: (h, b + b"x"), "no signature matches"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b), "webhook-signature"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-id"}, b), "webhook-id"),
        (lambda h, b: (dict(h, **{"webhook-timestamp": "soon"}), b), "not an integer"),
        (lambda h, b: (dict(h, **{"webhook-signature": "v2,abc"}), b), "no v1 signature"),
    ],
)
def test_verify_rejects_tampering(mutate, words):
    headers, body = mutate(signed_headers(), BODY)
    with pytest.raises(SignatureError, match=words):
        verify(SECRET, headers, body)


def test_verify_rejects_timestamps_outside_tolerance_both_ways():
    now = 1_700_000_000
    for ts in (now - 301, now + 301):
        with pytest.raises(SignatureError, match="tolerance"):
            verify(SECRET, signed_headers(ts=ts), BODY, now=now)
    verify(SECRET, signed_headers(ts=now - 299), BODY, now=now)
    verify(SECRET, signed_headers(ts=now - 1000), BODY, now=now, tolerance=1200)


def test_verify_header_lookup_is_case_insensitive():
    headers = {k.upper(): v for k, v in signed_headers().items()}
    verify(SECRET, headers, BODY)


def test_secret_with_or_without_prefix_and_padding():
    assert parse_secret(SECRET) == KEY
    assert parse_secret(SECRET.removeprefix("whsec_")) == KEY
    assert parse_secret(SECRET.rstrip("=")) == KEY
    assert parse_secret(f"  {SECRET}\n") == KEY


@pytest.mark.parametrize(
    ("secret", "words"),
    [
        ("whsec_not base64!", "not 'whsec_' followed by base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "too short"),
        ("whsec_", "too short"),
    ],
)
def test_bad_secrets_get_a_clear_error_that_does_not_repeat_them(secret, words):
    with pytest.raises(ValueError, match=words) as info:
        parse_secret(secret)
    body = secret.removeprefix("whsec_").strip()
    if body:
        assert body not in str(info.value)


@pytest.mark.parametrize(
    "name",
    [
        "Host",
        "host",
        "User-Agent",
        "Content-Type",
        "content-length",
        "Connection",
        "Transfer-Encoding",
        "webhook-id",
        "Webhook-Signature",
        "Upgrade",
        "TE",
        "Keep-Alive",
        "Bad Header",
        "X:Y",
        "",
    ],
)
def test_reserved_or_invalid_extra_headers_are_refused(name):
    assert header_name_problem(name)
    with pytest.raises(ValueError, match="header"):
        request_headers("evt", 1, "application/json", b"", None, {name: "x"})


def test_ordinary_extra_headers_pass():
    for name in ("X-Team", "Authorization", "X-Api-Key", "Accept-Language"):
        assert header_name_problem(name) is None
