"""What only the asyncio client has: the README's example run as written, an async
iterator of messages, uvloop and asyncio's own loop, no gevent imported. (Its behaviours
shared with the gevent client are in test_client_behaviour.py.)"""

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from clients.suite import Unavailable, check_namespace_support, greensq_bin_dir, run_in_netns

from greensq.client import aio

README = Path(__file__).parent.parent / "README.md"

# Run inside a private network namespace, where 127.0.0.1:4150 is free whatever else runs
# on the machine: greensq's nsqd on NSQ's default ports, then the example.
EXAMPLE_RUNNER = """
import subprocess, sys, tempfile
sys.path.insert(0, sys.argv[1])
from support import Daemon
with tempfile.TemporaryDirectory() as data:
    nsqd = Daemon(data, tcp_address="127.0.0.1:4150", http_address="127.0.0.1:4151").start()
    try:
        example = subprocess.run([sys.executable, sys.argv[2]], capture_output=True,
                                 timeout=60)
    finally:
        nsqd.stop()
sys.stdout.write(example.stdout.decode() + example.stderr.decode())
sys.exit(example.returncode)
"""


def readme_asyncio_example():
    """The README's asyncio example: the python block after its heading."""
    text = README.read_text()
    section = text[text.index("### On asyncio"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_asyncio_example_runs_as_written(tmp_path):
    try:
        check_namespace_support()
        daemons = greensq_bin_dir()
    except Unavailable as exc:
        pytest.skip(str(exc))
    example = readme_asyncio_example()
    assert len([line for line in example.splitlines() if line.strip()]) <= 10
    script = tmp_path / "example.py"
    script.write_text(example)
    status, output = run_in_netns(
        [sys.executable, "-c", EXAMPLE_RUNNER, str(Path(__file__).parent), str(script)],
        tmp_path, daemons, tmp_path)
    assert status == 0, output
    assert output.strip().splitlines()[-1] == "b'hello'", output


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
