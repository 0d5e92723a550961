"""What only the asyncio client has: an async iterator of messages, uvloop and asyncio's
own loop, no gevent imported. (Its behaviours shared with the gevent client are in
test_client_behaviour.py; the README's example runs in test_readme_examples.py.)"""

import asyncio
import subprocess
import sys

import pytest

from greensq.client import aio

@pytest.mark.slow
def test_importing_the_asyncio_client_imports_no_gevent():
    code = ("import sys; from greensq.client import aio, Message, HTTPError;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'gevent'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == b"[]"


async def round_trip(address, handler_kind):
    """Publish 20 messages and consume them with a handler of ``handler_kind``; the loop's
    type and the bodies seen."""
    got = []

    async def async_handler(message):
        await asyncio.sleep(0)          # really yields to the loop
        got.append(message.body)

    handler = async_handler if handler_kind == "async" else lambda m: got.append(m.body)
    async with aio.Producer([address]) as producer:
        futures = [producer.publish_async("loops", b"m%d" % i) for i in range(20)]
        assert await asyncio.gather(*futures) == [b"OK"] * 20
    async with aio.Consumer("loops", "ch", handler, nsqd_tcp_addresses=[address],
                            max_in_flight=7, concurrency=3):
        async with asyncio.timeout(20):
            while len(got) < 20:
                await asyncio.sleep(0.01)
    return type(asyncio.get_running_loop()), sorted(got)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("handler_kind", ["async", "plain"])
def test_the_client_runs_on_uvloop_and_on_asyncios_own_loop(nsqd, loop, handler_kind):
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop_type, got = aio.run(round_trip(nsqd.tcp_address, handler_kind))
        assert loop_type is uvloop.Loop       # aio.run picks uvloop when it is installed
    else:
        loop_type, got = asyncio.run(round_trip(nsqd.tcp_address, handler_kind))
        assert loop_type.__module__.startswith("asyncio")
    assert got == sorted(b"m%d" % i for i in range(20))
    assert nsqd.channel_stats("loops", "ch")["clients"] == []
    channel = nsqd.channel_stats("loops", "ch")
    assert (channel["depth"], channel["in_flight_count"], channel["requeue_count"]) == (0, 0, 0)


def test_the_async_iterator_yields_messages_and_close_requeues_those_not_taken(nsqd):
    async def scenario():
        async with aio.Producer([nsqd.tcp_address]) as producer:
            await producer.multi_publish("iter", [b"m%d" % i for i in range(5)])
        consumer = aio.Consumer("iter", "ch", nsqd_tcp_addresses=[nsqd.tcp_address],
                                max_in_flight=5)
        await consumer.start()
        taken = []
        async with asyncio.timeout(20):
            async for message in consumer:
                taken.append(message.body)
                message.finish()
                if len(taken) == 2:
                    break
            while consumer.stats["received"] < 5:   # the other three are held, not taken
                await asyncio.sleep(0.01)
            await consumer.close()
        after = [m async for m in consumer]    # a closed consumer's iterator ends
        return taken, after, dict(consumer.stats)

    taken, after, stats = asyncio.run(scenario())
    assert taken == [b"m0", b"m1"] and after == []
    assert (stats["finished"], stats["requeued"]) == (2, 3)
    channel = nsqd.channel_stats("iter", "ch")
    assert (channel["depth"], channel["in_flight_count"], channel["requeue_count"]) == (3, 0, 3)


def test_a_consumer_with_a_handler_is_not_an_iterator():
    consumer = aio.Consumer("t", "ch", lambda m: None, nsqd_tcp_addresses=["127.0.0.1:1"])
    with pytest.raises(TypeError):
        aiter(consumer)
