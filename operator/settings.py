"""The operator's configuration (env and flags) and the hardened Kopf settings built from it.

Kopf's defaults are tuned for demos: a watch that the network silently stalls is never noticed,
progress and diff-base go to annotations and a finalizer under kopf.zalando.org, and events are
posted at every level. Every one of those is pinned here so the operator behaves the same in every
cluster.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import kopf

from hookline import __version__
from hookline.api import ANNOTATION_PREFIX, FINALIZER, SenderMode
from hookline.durations import parse_duration
from hookline.operator.rules.backlog import BacklogSettings
from hookline.operator.rules.leadership import LeaseTiming
from hookline.operator.rules.natscreds import NatsAuthSettings, nats_auth_from_env
from hookline.operator.rules.recheck import RecheckSchedule
from hookline.operator.rules.senderpod import POD_TEMPLATE_ENV, SenderPodTemplate, parse_pod_template
from hookline.sender.bus.attemptlog import DEFAULT_ATTEMPTS_MAX_AGE_SECONDS, DEFAULT_ATTEMPTS_MAX_BYTES
from hookline.sender.bus.connection import DEFAULT_NATS_URL, NATS_URL_ENV
from hookline.sender.observe.logs import log_format_of
from hookline.sender.transport.dnsproof import parse_nameserver
from hookline.sender.transport.egress import EgressPolicy

# The message of the TemporaryError that schedules the next ownership check (QuietVerificationRetries).
NOT_VERIFIED_YET = "not verified yet"
DEFAULT_IMAGE = f"ghcr.io/hookline/hookline:{__version__}"


@dataclass(frozen=True)
class VerificationSchedule:
    """Delays between ownership checks: seconds at first (the customer is uploading the file right
    now), then growing to minutes (they went to lunch)."""

    first_delay: float = 5.0
    factor: float = 2.0
    max_delay: float = 300.0

    def __post_init__(self) -> None:
        if self.first_delay <= 0 or self.factor < 1 or self.max_delay < self.first_delay:
            raise ValueError("verification schedule needs first_delay > 0, factor >= 1, max >= first")


@dataclass(frozen=True)
class ReconcileTiming:
    """How the reconcile of one Webhook retries what it cannot finish now (Kopf runs it again)."""

    bus_retry_seconds: float = 10.0
    """A NATS outage, a pool write that failed, an unreadable signing Secret: passes by itself."""
    bus_refused_retry_seconds: float = 60.0
    """NATS refused the consumer (a limit, its configuration): a person must act; look now and then."""
    replace_attempts: int = 3
    """Reads and PUTs of a sender object that keeps changing meanwhile (409 Conflict) before a retry."""
    replace_retry_seconds: float = 5.0


@dataclass(frozen=True)
class HealthLoopTiming:
    """The one loop that mirrors the senders' health reports into status.delivery."""

    watch_retry_seconds: float = 5.0
    """NATS away: the health watch starts again after this long (status.delivery stays as it is)."""
    write_tick_seconds: float = 1.0
    """How often the write budget is spent (delivery_status_writes_per_second per second)."""


@dataclass(frozen=True)
class PoolSyncTiming:
    """The pool side of the operator: rosters watched, status.sender mirrored, pools listed."""

    roster_watch_retry_seconds: float = 5.0
    mirror_tick_seconds: float = 1.0
    """How often the status write budget (pool_status_writes_per_second) is spent."""
    listed_wait_seconds: float = 30.0
    """Right after a start, how long a pooled Webhook's reconcile waits for the list of pools, so it
    is not placed as if its pool had no replicas."""


@dataclass(frozen=True)
class ExpiryTiming:
    """How often finished WebhookTests are looked at for deletion: a share of the TTL, bounded."""

    ttl_share: float = 0.25
    min_interval: float = 0.5
    max_interval: float = 300.0

    def interval(self, ttl: float) -> float:
        return min(max(ttl * self.ttl_share, self.min_interval), self.max_interval)


@dataclass(frozen=True)
class LeaderElection:
    """Several operator replicas, one working: only the holder of this Lease runs Kopf's handlers."""

    namespace: str
    name: str
    identity: str  # this replica (its pod name): the Lease's holderIdentity
    timing: LeaseTiming = field(default_factory=LeaseTiming)


@dataclass(frozen=True)
class OperatorConfig:
    """Everything one operator instance is told. The flat fields are what the chart, the environment
    and the flags set (config_from_env); the grouped timings at the end pace the operator's own retries
    and loops, with defaults nobody needs to change but tests may (``replace(config, reconcile=...)``)."""

    nats_url: str = DEFAULT_NATS_URL
    sender_nats_url: str = DEFAULT_NATS_URL
    sender_image: str = DEFAULT_IMAGE
    egress: EgressPolicy = field(default_factory=EgressPolicy)
    verification: VerificationSchedule = field(default_factory=VerificationSchedule)
    check_timeout: float = 10.0  # per verification location
    # DNS TXT proofs: the resolvers asked (IP[:PORT]; empty: the system's), and the whole lookup's time.
    dns_nameservers: tuple[str, ...] = ()
    dns_timeout: float = 5.0
    # Periodic re-verification of every proof (chart values verification.*).
    recheck: RecheckSchedule = field(default_factory=RecheckSchedule)
    test_timeout: float = 10.0  # upper bound for one WebhookTest request
    test_ttl: float = 3600.0  # finished WebhookTests are deleted after this many seconds
    consumer_delete_attempts: int = 3  # then deletion goes ahead with a warning event
    consumer_delete_delay: float = 5.0
    delivery_check_interval: float = 15.0  # how often resume requests (annotation, new spec.url) are acted on
    # status.delivery from the senders' health reports: a Webhook's is written at most this often
    # while it changes (a new Delivering reason at once), and all of them within this budget.
    delivery_status_interval: float = 30.0
    delivery_status_writes_per_second: float = 20.0
    # status.sender of pooled Webhooks from the replicas' rosters (a pool starting brings all of its
    # Webhooks to Ready at this rate; once running it writes only when an engine starts or stops).
    pool_status_writes_per_second: float = 50.0
    # The attempt log (HOOKLINE_ATTEMPTS): the operator creates it and keeps its limits (chart values).
    attempts_max_age_seconds: float = DEFAULT_ATTEMPTS_MAX_AGE_SECONDS
    attempts_max_bytes: int = DEFAULT_ATTEMPTS_MAX_BYTES
    nats_connect_timeout: float = 5.0
    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    peering: str | None = None  # None: standalone
    health_port: int | None = 8080
    metrics_port: int | None = 9090
    # The JWKS endpoint of the Webhooks' public signing keys (handlers/jwks.py); None: off. With a
    # certificate and key (PEM files, e.g. a mounted kubernetes.io/tls Secret) it serves HTTPS.
    keys_port: int | None = None
    keys_tls_cert: str | None = None
    keys_tls_key: str | None = None
    # Whole seconds: Kopf sends it as the watch's timeoutSeconds, which the API server parses as an
    # integer ("300.0" is refused with 400 and no watch ever starts).
    watch_server_timeout: int = 300
    watch_client_timeout: float = 330.0
    connect_timeout: float = 30.0
    request_timeout: float = 60.0
    # Kopf's API client: requests at once besides watches (each TLS connection ~0.3 MiB of RSS;
    # unbounded, 1,000 new Webhooks opened 1,090), and the initial lists in pages of this many objects
    # (a restart among 10,000 Webhooks does not hold all of them, managedFields and all, at once).
    api_requests: int = 32
    list_chunk_size: int = 500
    # Objects of one kind handled at once (Kopf's per-object workers); the others' events wait in
    # their queues, slimmed (adapters/apisession.py), without a handler's state around them.
    workers: int = 500
    sender_service_account: str | None = None
    # What every dedicated sender pod gets besides the Webhook's own settings (chart values sender.*).
    sender_pod: SenderPodTemplate = field(default_factory=SenderPodTemplate)
    # None: this is the only operator (standalone); else the Lease its replicas share.
    leader_election: LeaderElection | None = None
    # text or json (HOOKLINE_LOG_FORMAT, --log-format): the operator's own and its senders' logs.
    log_format: str = "text"
    # Replicas of each Webhook's consumer (HOOKLINE_NATS_REPLICAS, chart nats.replicas); 0: as many as
    # the stream has (the server's default), which ingest sets from the same chart value.
    nats_replicas: int = 0
    # Where a Webhook's engine runs when its spec does not say (chart operator.defaultSenderMode /
    # defaultSenderPool), and the pool key that seals signing keys for pool replicas (a mounted Secret).
    default_sender_mode: SenderMode = SenderMode.DEDICATED
    default_sender_pool: str = "default"
    pool_key_file: str | None = None
    # Tenancy (chart tenancy.*): only what a WebhookPolicy grants a namespace runs (on by default);
    # the ConfigMap "NAMESPACE/NAME" the operator compiles the grants into for the admission policy.
    tenancy_enforce: bool = True
    grants_configmap: str | None = None
    grants_debounce_seconds: float = 0.5
    # Stuck Webhooks' backlogs moved to their dead letters before the shared stream fills (chart
    # operator.backlog.*), and the outbound client's share per namespace (operator.outboundPerNamespace).
    backlog: BacklogSettings = field(default_factory=BacklogSettings)
    # NATS users (chart nats.auth): the operator's own, and the senders' it mints (rules/natscreds.py).
    nats_auth: NatsAuthSettings = field(default_factory=NatsAuthSettings)
    outbound_per_namespace: int = 4
    outbound_connections: int = 100  # the outbound client's connections, all namespaces together
    reconcile: ReconcileTiming = field(default_factory=ReconcileTiming)
    health_loop: HealthLoopTiming = field(default_factory=HealthLoopTiming)
    pool_sync: PoolSyncTiming = field(default_factory=PoolSyncTiming)
    test_expiry: ExpiryTiming = field(default_factory=ExpiryTiming)


def config_from_env(
    env: Mapping[str, str] = os.environ,
    *,
    allow_networks: Sequence[str] | None = None,
    allow_http: bool | None = None,
    namespaces: Sequence[str] = (),
    peering: str | None = None,
    health_port: int | None = 8080,
    metrics_port: int | None = 9090,
    keys_port: int | None = None,
    keys_tls: tuple[str, str] | None = None,
    nats_replicas: int | None = None,
    leader_election: bool | None = None,
    log_format: str | None = None,
) -> OperatorConfig:
    """The chart sets HOOKLINE_* variables (docs/internals.md); flags win over env for egress."""
    nats_url = env.get(NATS_URL_ENV, "").strip() or DEFAULT_NATS_URL
    ttl = _positive(env, "HOOKLINE_WEBHOOKTEST_TTL_SECONDS", 3600.0, "a number of seconds")
    replicas_text = env.get("HOOKLINE_NATS_REPLICAS", "").strip()
    replicas = nats_replicas if nats_replicas is not None else parse_replicas(replicas_text or "0")
    return OperatorConfig(
        nats_url=nats_url,
        nats_replicas=replicas,
        sender_nats_url=env.get("HOOKLINE_SENDER_NATS_URL", "").strip() or nats_url,
        sender_image=env.get("HOOKLINE_SENDER_IMAGE", "").strip() or DEFAULT_IMAGE,
        egress=EgressPolicy.from_cli(allow_networks, allow_http, env),
        test_ttl=ttl,
        namespaces=tuple(namespaces),
        peering=peering,
        health_port=health_port,
        metrics_port=metrics_port,
        keys_port=keys_port,
        keys_tls_cert=keys_tls[0] if keys_tls else env.get("HOOKLINE_KEYS_TLS_CERT", "").strip() or None,
        keys_tls_key=keys_tls[1] if keys_tls else env.get("HOOKLINE_KEYS_TLS_KEY", "").strip() or None,
        sender_service_account=env.get("HOOKLINE_SENDER_SERVICE_ACCOUNT", "").strip() or None,
        delivery_status_interval=_positive(
            env, "HOOKLINE_DELIVERY_STATUS_INTERVAL_SECONDS", 30.0, "a number of seconds"
        ),
        delivery_status_writes_per_second=_positive(
            env, "HOOKLINE_DELIVERY_STATUS_WRITES_PER_SECOND", 20.0, "a number of writes per second"
        ),
        pool_status_writes_per_second=_positive(
            env, "HOOKLINE_POOL_STATUS_WRITES_PER_SECOND", 50.0, "a number of writes per second"
        ),
        attempts_max_age_seconds=_positive(
            env, "HOOKLINE_ATTEMPTS_MAX_AGE_SECONDS", DEFAULT_ATTEMPTS_MAX_AGE_SECONDS, "a number of seconds"
        ),
        attempts_max_bytes=int(
            _positive(env, "HOOKLINE_ATTEMPTS_MAX_BYTES", DEFAULT_ATTEMPTS_MAX_BYTES, "a number of bytes")
        ),
        default_sender_mode=parse_sender_mode(env.get("HOOKLINE_DEFAULT_SENDER_MODE", "").strip()),
        default_sender_pool=env.get("HOOKLINE_DEFAULT_SENDER_POOL", "").strip() or "default",
        pool_key_file=env.get("HOOKLINE_POOL_KEY_FILE", "").strip() or None,
        tenancy_enforce=env.get("HOOKLINE_TENANCY_ENFORCE", "true").strip().lower()
        not in ("0", "false", "no"),
        grants_configmap=env.get("HOOKLINE_GRANTS_CONFIGMAP", "").strip() or None,
        sender_pod=parse_pod_template(env.get(POD_TEMPLATE_ENV, "")),
        leader_election=leader_election_from_env(env, leader_election),
        dns_nameservers=dns_nameservers_from(env.get("HOOKLINE_DNS_NAMESERVERS", "").split(",")),
        dns_timeout=_positive(env, "HOOKLINE_DNS_TIMEOUT_SECONDS", 5.0, "a number of seconds"),
        recheck=recheck_from_env(env),
        log_format=log_format_of(log_format, env),
        backlog=backlog_from_env(env),
        nats_auth=nats_auth_from_env(env),
        outbound_per_namespace=int(
            _positive(env, "HOOKLINE_OUTBOUND_PER_NAMESPACE", 4, "a number of concurrent requests")
        ),
        api_requests=int(_positive(env, "HOOKLINE_API_REQUESTS", 32, "a number of concurrent requests")),
        workers=int(_positive(env, "HOOKLINE_OPERATOR_WORKERS", 500, "a number of objects")),
    )


def backlog_from_env(env: Mapping[str, str]) -> BacklogSettings:
    """HOOKLINE_BACKLOG_* (chart operator.backlog.*); HOOKLINE_BACKLOG_MAX_PENDING 0 is no cap."""
    seconds = "a number of seconds"
    cap = env.get("HOOKLINE_BACKLOG_MAX_PENDING", "").strip() or "0"
    if not cap.isdigit():
        raise ValueError(f"HOOKLINE_BACKLOG_MAX_PENDING={cap!r} is not a whole number of events (0: no cap)")
    return BacklogSettings(
        enabled=env.get("HOOKLINE_BACKLOG_ENABLED", "1").strip().lower() not in ("0", "false", "no"),
        high_water=_positive(env, "HOOKLINE_BACKLOG_HIGH_WATER_PERCENT", 60, "a percentage") / 100,
        max_pending=int(cap),
        stalled_seconds=_positive(env, "HOOKLINE_BACKLOG_STALLED_SECONDS", 300, seconds),
        moves_per_tick=int(_positive(env, "HOOKLINE_BACKLOG_MOVES_PER_TICK", 2000, "a number of events")),
        tick_seconds=_positive(env, "HOOKLINE_BACKLOG_TICK_SECONDS", 10, seconds),
    )


def dns_nameservers_from(values: Sequence[str]) -> tuple[str, ...]:
    """HOOKLINE_DNS_NAMESERVERS (comma-separated) or --dns-nameserver: each IP[:PORT], checked now."""
    found = tuple(v.strip() for v in values if v.strip())
    for value in found:
        parse_nameserver(value)
    return found


def recheck_from_env(env: Mapping[str, str]) -> RecheckSchedule:
    """HOOKLINE_RECHECK_INTERVAL and HOOKLINE_RECHECK_GRACE_PERIOD (durations such as 24h, 3d) and
    HOOKLINE_RECHECKS_PER_SECOND (chart values verification.recheckInterval, gracePeriod,
    rechecksPerSecond)."""
    default = RecheckSchedule()
    return RecheckSchedule(
        interval=_duration(env, "HOOKLINE_RECHECK_INTERVAL", default.interval),
        grace=_duration(env, "HOOKLINE_RECHECK_GRACE_PERIOD", default.grace),
        grace_retry=_duration(env, "HOOKLINE_RECHECK_GRACE_RETRY", default.grace_retry),
        checks_per_second=_positive(
            env, "HOOKLINE_RECHECKS_PER_SECOND", 1.0, "a number of checks per second"
        ),
    )


def _duration(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"{name}={text!r}: {exc}") from None


def leader_election_from_env(env: Mapping[str, str], enabled: bool | None) -> LeaderElection | None:
    """HOOKLINE_LEADER_ELECTION_LEASE (the chart: <fullname>-operator) turns it on; the flag
    --leader-election (or --no-leader-election) wins. The Lease is in HOOKLINE_POD_NAMESPACE and held
    under HOOKLINE_POD_NAME (the chart sets both from the downward API)."""
    lease = env.get("HOOKLINE_LEADER_ELECTION_LEASE", "").strip()
    if enabled is None:
        enabled = bool(lease)
    if not enabled:
        return None
    identity = env.get("HOOKLINE_POD_NAME", "").strip() or f"{socket.gethostname()}-{os.getpid()}"
    seconds = "a number of seconds"
    timing = LeaseTiming(
        lease_seconds=_positive(env, "HOOKLINE_LEASE_DURATION_SECONDS", 15.0, seconds),
        renew_deadline_seconds=_positive(env, "HOOKLINE_LEASE_RENEW_DEADLINE_SECONDS", 10.0, seconds),
        retry_seconds=_positive(env, "HOOKLINE_LEASE_RETRY_PERIOD_SECONDS", 2.0, seconds),
    )
    return LeaderElection(
        namespace=env.get("HOOKLINE_POD_NAMESPACE", "").strip() or "default",
        name=lease or "hookline-operator",
        identity=identity,
        timing=timing,
    )


def parse_sender_mode(text: str) -> SenderMode:
    """HOOKLINE_DEFAULT_SENDER_MODE: Dedicated (the default) or Pool."""
    if not text:
        return SenderMode.DEDICATED
    for mode in SenderMode:
        if text.lower() == mode.value.lower():
            return mode
    raise ValueError(f"HOOKLINE_DEFAULT_SENDER_MODE={text!r} is not Dedicated or Pool")


def _positive(env: Mapping[str, str], name: str, default: float, what: str) -> float:
    """A positive number from the environment, or the default when unset; the error names both."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not {what}") from None
    if not value > 0:
        raise ValueError(f"{name}={text!r} must be more than 0 ({what})")
    return value


def parse_replicas(text: str) -> int:
    """HOOKLINE_NATS_REPLICAS / --nats-replicas: 0 (as the stream) or 1 to 5."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"HOOKLINE_NATS_REPLICAS={text!r} is not a whole number (1, 3 or 5)") from None
    if not 0 <= value <= 5:
        raise ValueError(f"HOOKLINE_NATS_REPLICAS={text!r}: NATS keeps 1 to 5 replicas (0: as the stream)")
    return value


def kopf_settings(config: OperatorConfig) -> kopf.OperatorSettings:
    """Kopf settings hardened against its known pitfalls."""
    settings = kopf.OperatorSettings()
    # Our own names for everything Kopf stores on objects.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # A watch stalled by a proxy or a lost connection is ended and restarted, never waited on forever.
    settings.watching.server_timeout = int(config.watch_server_timeout)
    settings.watching.client_timeout = config.watch_client_timeout
    settings.watching.connect_timeout = config.connect_timeout
    settings.networking.connect_timeout = config.connect_timeout
    settings.networking.request_timeout = config.request_timeout
    settings.watching.chunk_size = config.list_chunk_size
    settings.queueing.worker_limit = config.workers
    # Kubernetes Events only for what a user acts on; debug chatter stays in the logs.
    settings.posting.level = logging.INFO
    return settings


class QuietVerificationRetries(logging.Filter):
    """Kopf logs every TemporaryError at ERROR and posts it as a Warning Event; a Webhook whose file
    is not in place yet is an expected state, reported in its status and conditions. Such records
    go to this module's logger at DEBUG instead (1,000 unverified Webhooks were 18,700 ERROR lines)."""

    marker = f"failed temporarily: {NOT_VERIFIED_YET}"
    quiet = logging.getLogger("hookline.operator.rules.verification")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and self.marker in str(record.msg):
            self.quiet.debug("%s", record.getMessage())
            return False
        return True


def quiet_verification_retries() -> None:
    """Install the filter on Kopf's per-object logger once per process."""
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, QuietVerificationRetries) for f in objects.filters):
        objects.addFilter(QuietVerificationRetries())
