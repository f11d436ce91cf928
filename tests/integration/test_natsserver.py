import nats


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
