"""Signing cost per scheme (`make bench` rows; `python bench/signing.py` alone).

1. Signatures/s of each scheme in this process: the headers of one typical JSON delivery (~300 bytes)
   built by the engine's own code (sender/model/request.py's Delivery), unsigned as the baseline:
   Standard Webhooks v1 (HMAC-SHA256) with one key and with two (a rotation), v1a (ed25519), and RFC 9421
   HTTP Message Signatures with ed25519 and with HMAC (Content-Digest included).
2. Deliveries/s of one `hookline sender` process per scheme against the same loopback receiver (its own
   process), each with fresh events; the ratio to the unsigned run is what a scheme costs end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import BENCH_RATE_LIMIT, HOOKLINE, rate, sample_event, spawn, stop, wait_count, wait_http  # noqa: E402

from hookline.api import parse_webhook_spec  # noqa: E402
from hookline.sender import bus  # noqa: E402
from hookline.sender.bus.natsserver import EmbeddedNats, free_port  # noqa: E402
from hookline.sender.model.config import consumer_name, parse_sender_config  # noqa: E402
from hookline.sender.model.credentials import Credentials  # noqa: E402
from hookline.sender.model.events import parse_event  # noqa: E402
from hookline.sender.model.request import Delivery  # noqa: E402
from hookline.sender.model.signingkeys import generate_key_text, parse_signing_key  # noqa: E402

HMAC_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HMAC_B = "whsec_" + "QkVOQ0hCRU5DSEJFTkNIQkVOQ0hCRU5DSEJFTkNIISE="
ED25519 = generate_key_text("ed25519")
REF = {"name": "k", "key": "k"}
SCHEMES: dict[str, tuple[dict[str, Any] | None, list[str]]] = {
    "none": (None, []),
    "v1 (HMAC-SHA256)": ({"secretRef": REF}, [HMAC_A]),
    "v1, two keys (rotation)": ({"secretRefs": [REF, {"name": "k2", "key": "k"}]}, [HMAC_A, HMAC_B]),
    "v1a (ed25519)": ({"secretRef": REF}, [ED25519]),
    "RFC 9421 ed25519": ({"scheme": "HTTPMessageSignatures", "secretRef": REF}, [ED25519]),
    "RFC 9421 hmac-sha256": ({"scheme": "HTTPMessageSignatures", "secretRef": REF}, [HMAC_A]),
}


def spec_of(url: str, signing: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "url": url,
        "events": ["click"],
        "database": "newsletter",
        "format": "json",
        **({"signing": signing} if signing else {}),
        "delivery": {"maxInFlight": 32, "maxRequestsPerSecond": BENCH_RATE_LIMIT},
    }


def signatures_per_second(seconds: float) -> dict[str, float]:
    """Requests' headers built per second by each scheme (one core, this process)."""
    event = parse_event(sample_event(1, "sig"))
    out = {}
    for label, (signing, keys) in SCHEMES.items():
        spec = parse_webhook_spec(spec_of("https://shop.example.com/hooks/copernica.php", signing))
        creds = Credentials(keys=tuple(parse_signing_key(k) for k in keys)) if keys else None
        delivery = Delivery(spec, creds)
        count, started = 0, time.perf_counter()
        deadline = started + seconds
        while True:
            for _ in range(200):
                delivery.build(event, 1_700_000_000.0)
            count += 200
            if time.perf_counter() >= deadline:
                break
        out[label] = count / (time.perf_counter() - started)
    return out


async def deliveries_per_second(events_per_run: int, rounds: int = 2) -> dict[str, float]:
    """One `hookline sender` process per scheme and round, the schemes interleaved; the best round of
    each (other load on a shared machine only ever slows a run down). Deliveries/s at the receiver."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="hookline-bench-signing-") as name:
        tmp = Path(name)
        port = free_port()
        receiver = spawn([sys.executable, str(ROOT / "bench" / "receiver.py"), str(port)])
        base = f"http://127.0.0.1:{port}"
        try:
            with EmbeddedNats(tmp / "nats", log_file=tmp / "nats.log") as nats:
                async with aiohttp.ClientSession() as http:
                    await wait_http(http, f"{base}/stats", receiver)
                    runs = [(r, i, item) for r in range(rounds) for i, item in enumerate(SCHEMES.items())]
                    for round_, index, (label, (signing, keys)) in runs:
                        files = []
                        for n, key in enumerate(keys):
                            path = tmp / f"key-{index}-{n}"
                            path.write_text(key)
                            files.append(str(path))
                        tag = f"r{round_}s{index}"
                        cfg = parse_sender_config(
                            {
                                "webhook": {"namespace": "bench", "name": f"signing-{tag}"},
                                "spec": spec_of(f"{base}/hooks/copernica.php", signing),
                                "nats": {
                                    "url": nats.url,
                                    "consumer": consumer_name("bench", f"signing-{tag}"),
                                },
                                **({"signingSecretFiles": files} if files else {}),
                                "listen": f"127.0.0.1:{free_port()}",
                                "allowNetworks": ["127.0.0.0/8"],
                                "allowHttp": True,
                            }
                        )
                        config = tmp / f"sender-{tag}.yaml"
                        config.write_text(yaml.safe_dump(cfg.to_document()))
                        nc = await bus.connect(nats.url)
                        js = nc.jetstream()
                        await bus.ensure_stream(js)
                        await bus.ensure_consumer(js, cfg)
                        events = [parse_event(sample_event(i, tag)) for i in range(events_per_run)]
                        for start in range(0, len(events), 500):
                            await bus.publish_events(nc, js, events[start : start + 500], ack_timeout=30)
                        await nc.close()
                        async with http.post(f"{base}/reset") as response:
                            await response.read()
                        print(f"  {label}: {events_per_run} deliveries ...", flush=True)
                        proc = spawn(
                            [*HOOKLINE, "sender", "--config", str(config)], tmp / f"sender-{tag}.log"
                        )
                        try:
                            stats = await wait_count(http, base, events_per_run, within=300, key="events")
                        finally:
                            stop(proc)
                        out[label] = max(out.get(label, 0.0), rate(stats))
        finally:
            stop(receiver)
    return out


async def measure(events_per_run: int, seconds: float = 1.0, rounds: int = 2) -> dict[str, Any]:
    print("signing: signatures/s per scheme ...", flush=True)
    result: dict[str, Any] = {
        "signatures_per_second": signatures_per_second(seconds),
        "events": events_per_run,
    }
    if events_per_run > 0:
        result["deliveries_per_second"] = await deliveries_per_second(events_per_run, rounds)
        result["rounds"] = rounds
    return result


def report_rows(result: dict[str, Any]) -> list[str]:
    """The report's rows (bench/run.py puts them in `make bench`'s table)."""
    rows = []
    per_sec = result["signatures_per_second"]
    base = per_sec["none"]
    for label, value in per_sec.items():
        if label == "none":
            rows.append(f"| request headers built/s, unsigned (bench/signing.py) | {value:,.0f} |")
        else:
            cost = (1 / value - 1 / base) * 1e6
            rows.append(f"| signatures/s, {label} (bench/signing.py) | {value:,.0f} ({cost:.1f} µs each) |")
    delivered = result.get("deliveries_per_second") or {}
    none = delivered.get("none")
    for label, value in delivered.items():
        ratio = f" ({value / none:.2f} of unsigned)" if none and label != "none" else ""
        runs = f"{result['events']} events, best of {result.get('rounds', 1)}"
        where = f"one sender, {label}, {runs} (bench/signing.py)"
        rows.append(f"| deliveries/s, {where} | {value:.0f}{ratio} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=5000, help="deliveries per scheme; 0: signatures/s only"
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="per scheme for signatures/s")
    parser.add_argument("--rounds", type=int, default=2, help="delivery rounds per scheme; the best is kept")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.events, args.seconds, args.rounds))
    print(json.dumps(result, indent=2))
    print("\n".join(report_rows(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
