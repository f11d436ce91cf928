"""How many copies the server keeps of a stream or key-value bucket (all of hookline's: events, dead
letters, floors, the attempt log and health bucket): the bound, and moving an existing one."""

from __future__ import annotations

from nats.js import JetStreamContext

# Stream, bucket and consumer replicas: 1 for a single server (the embedded one refuses more),
# 3 recommended on a NATS cluster (a stream survives the loss of one node of three).
DEFAULT_REPLICAS = 1
MAX_REPLICAS = 5


def check_replicas(replicas: int) -> int:
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ValueError(f"NATS replicas must be 1 to {MAX_REPLICAS} (1 on a single server, 3 on a cluster)")
    return int(replicas)


async def ensure_replicas(js: JetStreamContext, stream: str, replicas: int) -> bool:
    """Move an existing stream (or a key-value bucket's stream, `KV_<bucket>`) to `replicas`;
    False when it already has them. On a single server anything above 1 is refused (err_code 10074)."""
    check_replicas(replicas)
    info = await js.stream_info(stream)
    if (info.config.num_replicas or 1) == replicas:
        return False
    await js.update_stream(info.config.evolve(num_replicas=replicas))
    return True


async def ensure_direct(js: JetStreamContext, stream: str) -> bool:
    """Let a key-value bucket's stream answer direct gets (`$JS.API.DIRECT.GET.<stream>.<subject>`): the
    subject names the key, so a least-privileged user may read its own key and no other
    (natsperms.py); a plain message get names the key in its body, which permissions cannot see."""
    info = await js.stream_info(stream)
    if info.config.allow_direct:
        return False
    await js.update_stream(info.config.evolve(allow_direct=True))
    return True
