import nats

from hookline.sender.bus.natsserver import free_ports


async def test_embedded_server_keeps_jetstream_data_across_restart(nats_server):
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(name="T", subjects=["t.>"])
    await js.publish("t.x", b"kept")
    await nc.close()

    nats_server.restart()

    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    msg = await js.get_last_msg("T", "t.x")
    assert msg.data == b"kept"
    await nc.close()


def test_free_ports_are_distinct():
    # Picked one at a time, a released port may come back at once: a cluster node once got the same
    # port for clients and routes. Held together, they cannot repeat.
    for _ in range(20):
        ports = free_ports(6)
        assert len(set(ports)) == 6 and all(port > 0 for port in ports)
