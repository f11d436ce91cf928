"""What tenancy costs the operator at 10,000 Webhooks (pure parts, no API server): the memory of the
tables its indexes hold, one grants-loop pass over every Webhook, compiling the admission ConfigMap,
and one reconcile's grant check.

    .venv/bin/python bench/tenancy_cost.py --webhooks 10000 --namespaces 500 --policies 20
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

from hookline.api import parse_webhook_spec
from hookline.api.policy import effective_grant, grant_record, parse_policy_spec
from hookline.operator.rules import tenancy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--webhooks", type=int, default=10_000)
    parser.add_argument("--namespaces", type=int, default=500)
    parser.add_argument("--policies", type=int, default=20)
    args = parser.parse_args()
    tracemalloc.start()
    webhooks: dict[str, list[tuple[str, str]]] = {f"team-{i}": [] for i in range(args.namespaces)}
    for i in range(args.webhooks):
        webhooks[f"team-{i % args.namespaces}"].append((f"2026-12-04T03:{i % 60:02d}:00Z", f"webhook-{i}"))
    labels = {ns: {"team": ns, "kubernetes.io/metadata.name": ns} for ns in webhooks}
    policies = [
        (
            f"p{i}",
            parse_policy_spec(
                {
                    "namespaceSelector": {"matchLabels": {"team": f"team-{i}"}},
                    "databases": [{"name": f"db{i}", "collections": ["*"]}],
                    "maxWebhooks": 50,
                }
            ),
        )
        for i in range(args.policies)
    ]
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    started = time.perf_counter()
    for ns, entries in webhooks.items():
        grant = effective_grant(ns, labels[ns], policies)
        by_age = tenancy.names_by_age(entries)
        for _, name in entries:
            tenancy.standing(grant, by_age, name)
    loop = time.perf_counter() - started
    started = time.perf_counter()
    data: dict[str, str] = {}
    for ns in labels:
        data.update(grant_record(ns, effective_grant(ns, labels[ns], policies)))
    compiled = time.perf_counter() - started
    spec = parse_webhook_spec({"url": "https://x.example/h", "events": ["open"], "database": "db7"})
    started = time.perf_counter()
    for _ in range(1000):
        grant = effective_grant("team-7", labels["team-7"], policies)
        tenancy.verdict(
            spec, "team-7", "w", grant, tenancy.names_by_age(webhooks["team-7"]), floor_http=False
        )
    check = (time.perf_counter() - started) / 1000
    print(f"{args.webhooks} Webhooks, {args.namespaces} namespaces, {args.policies} policies:")
    print(f"  tables the indexes hold: {size / 1024 / 1024:.1f} MiB")
    print(f"  one grants-loop pass: {loop * 1000:.0f} ms")
    size_bytes = sum(map(len, data)) + sum(map(len, data.values()))
    print(f"  compiling the admission ConfigMap: {compiled * 1000:.0f} ms, {size_bytes} bytes")
    print(f"  one reconcile's grant check: {check * 1000:.2f} ms")


if __name__ == "__main__":
    main()
