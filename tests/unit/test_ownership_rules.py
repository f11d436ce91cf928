"""The pure decisions of ownership proofs: when a proof is re-checked, what a re-check writes, the grace
period, the installation's rate, which domain covers which host, which Webhooks a domain change touches."""

from __future__ import annotations

import pytest

from hookline.api import SpecError
from hookline.api.domain import host_covered, parse_domain_spec
from hookline.operator.rules import verification
from hookline.operator.rules.domains import DomainEntry, WebhookProofFacts, affected, covering, index_entry
from hookline.operator.rules.recheck import (
    Proof,
    RecheckSchedule,
    TokenBucket,
    after_recheck,
    due_at,
    due_now,
    jitter_share,
)
from hookline.sender.transport.ownership import OwnershipResult

HOUR, DAY = 3600.0, 86400.0
SCHEDULE = RecheckSchedule()
FOUND = OwnershipResult("FileMatched", "https://shop.example/hookline-x.txt", "verified")
GONE = OwnershipResult("FileNotFound", None, "verification file not found (HTTP 404)")


def proof(name: str = "orders", **changes) -> Proof:
    base = dict(kind="Webhook", namespace="shop", name=name, uid="u", method="File",
                target="https://shop.example/hook", token="t" * 32, interval=DAY, last_checked=1000.0,
                verified=True)  # fmt: skip
    return Proof(**{**base, **changes})


def test_a_verified_proof_comes_due_within_its_jitter_window_at_a_stable_point():
    due = [due_at(proof(f"wh-{i}"), SCHEDULE, first_delay=5, max_delay=300) for i in range(200)]
    assert all(1000 + 0.9 * DAY <= d <= 1000 + DAY for d in due)
    assert max(due) - min(due) > 0.08 * DAY  # spread over the window, not bunched
    assert jitter_share(("Webhook", "shop", "wh-1")) == jitter_share(("Webhook", "shop", "wh-1"))


def test_a_failing_proof_is_rechecked_on_the_grace_retry_and_an_unverified_domain_at_once():
    failing = proof(failing_since=900.0)
    assert due_at(failing, SCHEDULE, first_delay=5, max_delay=300) == 1000 + HOUR
    new_domain = proof(kind="WebhookDomain", verified=False, last_checked=0.0)
    assert due_at(new_domain, SCHEDULE, first_delay=5, max_delay=300) == 0.0
    waiting = proof(kind="WebhookDomain", verified=False, checks=3)
    assert due_at(waiting, SCHEDULE, first_delay=5, max_delay=300) == 1000 + 20
    due = due_now([proof("a"), failing], 1000 + 2 * HOUR, SCHEDULE, first_delay=5, max_delay=300)
    assert [p.name for p in due] == ["orders"]


def test_the_token_bucket_bounds_rechecks_across_the_installation():
    bucket = TokenBucket(rate=1.0, burst=10)
    assert sum(bucket.take(0.0) for _ in range(100)) == 10  # the burst
    assert sum(bucket.take(5.0) for _ in range(100)) == 5  # then the rate
    assert not bucket.take(5.5)


def test_a_recheck_that_finds_the_proof_writes_one_timestamp():
    outcome = after_recheck(proof(), FOUND, 2000.0, SCHEDULE)
    assert list(outcome.fields) == ["lastCheckedAt"] and outcome.event is None and not outcome.lapsed


def test_a_failed_recheck_starts_the_grace_then_lapses_and_a_found_proof_restores():
    first = after_recheck(proof(), GONE, 2000.0, SCHEDULE)
    assert first.event is not None and first.event.reason == "OwnershipRecheckFailed"
    assert first.fields["failingSince"] == first.fields["lastCheckedAt"] and not first.lapsed
    assert "pause at" in first.event.message and "404" in first.event.message
    again = after_recheck(proof(failing_since=2000.0), GONE, 2000.0 + HOUR, SCHEDULE)
    assert again.event is None and not again.lapsed  # said once
    late = after_recheck(proof(failing_since=2000.0), GONE, 2000.0 + 3 * DAY, SCHEDULE)
    assert late.lapsed and late.event is not None and late.event.reason == "OwnershipLapsed"
    assert late.fields["lapsedAt"]
    back = after_recheck(proof(failing_since=2000.0), FOUND, 2000.0 + DAY, SCHEDULE)
    assert back.restored and back.fields["failingSince"] is None and back.event.reason == "OwnershipRestored"


def test_a_lapsed_proof_is_not_verified_but_was_and_a_failed_check_says_ownership_lapsed():
    url = "https://shop.example/hook"
    status = {"verification": {"verifiedURL": url, "verifiedFor": verification.url_fingerprint(url)}}
    assert verification.is_verified_for(status, url)
    status["verification"]["lapsedAt"] = "2026-12-04T00:00:00Z"
    assert not verification.is_verified_for(status, url) and verification.was_verified_for(status, url)
    condition = verification.verified_condition(GONE, 5.0, lapsed=True)
    assert (condition.status, condition.reason) == ("False", "OwnershipLapsed")
    dns = {"verification": {"method": "DNS", "record": "_hookline-challenge.shop.example",
                            "verifiedFor": verification.url_fingerprint(url)}}  # fmt: skip
    assert verification.is_verified_for(dns, url)
    assert verification.verified_by(dns["verification"]).reason == "RecordMatched"


def test_a_domain_covers_itself_and_below_only_when_it_says_so():
    assert host_covered("Shop.Example.", "shop.example", include_subdomains=False)
    assert not host_covered("api.shop.example", "shop.example", include_subdomains=False)
    assert host_covered("api.shop.example", "shop.example", include_subdomains=True)
    assert not host_covered("evilshop.example", "shop.example", include_subdomains=True)
    entries = [
        DomainEntry("wide", "shop.example", True, True),
        DomainEntry("narrow", "api.shop.example", False, True),
        DomainEntry("unproven", "www.shop.example", False, False),
    ]
    assert covering(entries, "https://api.shop.example/x").name == "narrow"  # the most specific
    assert covering(entries, "https://www.shop.example/x").name == "wide"  # not the unproven one
    assert covering(entries, "https://other.example/x") is None


def test_subdomains_need_the_dns_method_and_a_domain_is_a_plain_name():
    with pytest.raises(SpecError, match=r"spec\.includeSubdomains: needs method DNS"):
        parse_domain_spec({"domain": "shop.example", "method": "File", "includeSubdomains": True})
    with pytest.raises(SpecError, match=r"spec\.domain"):
        parse_domain_spec({"domain": "https://shop.example/"})
    assert index_entry("d", {"domain": "shop.example"}, {"verifiedFor": "DNS:shop.example"}).verified
    assert not index_entry("d", {"domain": "shop.example"}, {"verifiedFor": "File:shop.example"}).verified


def test_a_domain_change_touches_the_webhooks_it_proves_or_now_covers_in_its_namespace_only():
    webhooks = {
        ("shop", "proven"): WebhookProofFacts("https://api.shop.example/a", True, "d"),
        ("shop", "waiting"): WebhookProofFacts("https://www.shop.example/b", False, None),
        ("shop", "own-proof"): WebhookProofFacts("https://www.shop.example/c", True, None),
        ("other", "waiting"): WebhookProofFacts("https://www.shop.example/b", False, None),
    }
    verified = DomainEntry("d", "shop.example", True, True)
    lapsed = DomainEntry("d", "shop.example", True, False)
    assert affected(webhooks, "shop", None, verified) == [("shop", "waiting")]
    assert affected(webhooks, "shop", verified, lapsed) == [("shop", "proven")]
    assert affected(webhooks, "shop", verified, None) == [("shop", "proven")]
    narrowed = DomainEntry("d", "shop.example", False, True)  # includeSubdomains dropped
    assert affected(webhooks, "shop", verified, narrowed) == [("shop", "proven")]


def test_the_operator_reads_its_recheck_schedule_and_resolvers_from_the_chart_env():
    from hookline.operator.settings import config_from_env

    config = config_from_env(
        {
            "HOOKLINE_RECHECK_INTERVAL": "12h",
            "HOOKLINE_RECHECK_GRACE_PERIOD": "3d",
            "HOOKLINE_RECHECK_GRACE_RETRY": "30m",
            "HOOKLINE_RECHECKS_PER_SECOND": "5",
            "HOOKLINE_DNS_NAMESERVERS": "10.0.0.53, 10.0.0.54:5353",
            "HOOKLINE_DNS_TIMEOUT_SECONDS": "2",
        }
    )
    assert (config.recheck.interval, config.recheck.grace, config.recheck.grace_retry) == (
        12 * HOUR,
        3 * DAY,
        1800,
    )
    assert config.recheck.checks_per_second == 5 and config.dns_timeout == 2
    assert config.dns_nameservers == ("10.0.0.53", "10.0.0.54:5353")
    assert config_from_env({}).recheck == RecheckSchedule() and config_from_env({}).dns_nameservers == ()
    with pytest.raises(ValueError, match="HOOKLINE_RECHECK_INTERVAL='1 day'"):
        config_from_env({"HOOKLINE_RECHECK_INTERVAL": "1 day"})
    with pytest.raises(ValueError, match="is not an IP address"):
        config_from_env({"HOOKLINE_DNS_NAMESERVERS": "dns.example"})
