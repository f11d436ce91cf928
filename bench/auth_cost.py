"""What ingest's producer tokens and the pool's record MACs cost, on this machine (issue 19).

    .venv/bin/python bench/auth_cost.py

Prints the time to identify a bearer token among N configured tokens (SHA-256 of the token, then a
constant-time comparison with every one), to check a 1,000-event request's databases, and to sign and
open one 2 KB pool entry (HMAC-SHA256 over its KV key and bytes).
"""

from __future__ import annotations

import hashlib
import timeit

from hookline.sender.bus.poolproto import PoolKey
from hookline.sender.ingest.body import Outgoing
from hookline.sender.ingest.producers import ProducerAuth, ProducerToken


def per_call(call, number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number


def main() -> None:
    producer = None
    for count in (1, 100, 1000):
        tokens = [
            ProducerToken(
                f"p{i}", hashlib.sha256(f"token-{i}-0123456789abcdef".encode()).digest(), frozenset({"db"})
            )
            for i in range(count)
        ]
        auth = ProducerAuth(tokens)
        header = f"Bearer token-{count - 1}-0123456789abcdef"
        seconds = per_call(lambda a=auth, h=header: a.identify(h), 2000)
        print(f"identify a token among {count:>4}: {seconds * 1e6:6.1f} us")
        producer = tokens[-1]
    batch = [Outgoing(str(i), "hookline.events.open.db._", b"", "db") for i in range(1000)]
    seconds = per_call(lambda: ProducerAuth.check_databases(producer, batch), 200)
    print(f"databases of a 1,000-event request: {seconds * 1e6:6.1f} us")
    key, kv_key, payload = PoolKey("k" * 40), "a.default.0.hookline_shop_orders", b"x" * 2048
    seconds = per_call(lambda: key.open_record(kv_key, key.sign_record(kv_key, payload)), 5000)
    print(f"sign and open a 2 KB pool entry: {seconds * 1e6:6.1f} us")


if __name__ == "__main__":
    main()
