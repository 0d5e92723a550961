"""One synchronous face for greensq.client's two flavours, so that a behaviour test is
written once and run against both (tests/test_client_behaviour.py):

* :class:`GeventDriver` runs the gevent client in the test's own greenlet, as its own
  tests do (waits yield to the hub);
* :class:`AioDriver` runs the asyncio client on an event loop in a thread of its own;
  the test thread hands it coroutines and calls (``run``, ``call``) and reads the
  client's state while it runs.

Handlers are plain functions of the test, run where the client runs its handlers; a
``gate`` makes the handler wait (a greenlet, a task), once the function has run, until
the test opens it.
"""

import asyncio
import threading

import gevent
import gevent.event

from support import gevent_wait_until, wait_until

TIMEOUT = 30.0


class GeventDriver:
    name = "gevent"

    def __init__(self):
        from greensq import client

        self.client = client

    def producer(self, addresses, **options):
        return self.client.Producer(addresses, **options)

    def consumer(self, topic, channel, handler, **options):
        return self.client.Consumer(topic, channel, handler, **options)

    def start(self, consumer):
        return consumer.start()

    def close(self, client, **kwargs):
        client.close(**kwargs)

    def close_later(self, consumer):
        """Close ``consumer`` in the background; returns what :meth:`finished` asks."""
        return gevent.spawn(consumer.close)

    def finished(self, closing, timeout=None):
        closing.join(timeout)
        return closing.dead

    def publish(self, producer, method, *args, **kwargs):
        return getattr(producer, method)(*args, **kwargs)

    def publish_pipelined(self, producer, topic, bodies):
        """PUB every body without waiting; ``(requests in flight once all were sent,
        answers)``."""
        results = [producer.publish_async(topic, body) for body in bodies]
        in_flight = producer.connection.pending_requests
        return in_flight, [r.get(timeout=TIMEOUT) for r in results]

    def call(self, func, *args):
        return func(*args)

    def gate(self):
        return gevent.event.Event()

    def handler(self, func, gate=None):
        def handle(message):
            func(message)
            if gate is not None:
                gate.wait()
        return handle

    def wait_until(self, predicate, timeout=10.0, message="condition"):
        return gevent_wait_until(predicate, timeout, message=message)

    def shutdown(self):
        pass


class _AioGate:
    """An asyncio.Event that the test thread can open."""

    def __init__(self, loop):
        self.loop = loop
        self.event = asyncio.Event()

    def set(self):
        self.loop.call_soon_threadsafe(self.event.set)

    async def wait(self):
        await self.event.wait()


class AioDriver:
    name = "aio"

    def __init__(self):
        from greensq.client import aio

        self.client = aio
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout=TIMEOUT):
        """Run ``coroutine`` on the client's loop; its result (or exception)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def call(self, func, *args):
        """``func(*args)`` in the loop's thread (the client is not thread-safe)."""
        async def call():
            return func(*args)
        return self.run(call())

    def producer(self, addresses, **options):
        return self.call(lambda: self.client.Producer(addresses, **options))

    def consumer(self, topic, channel, handler, **options):
        return self.call(lambda: self.client.Consumer(topic, channel, handler, **options))

    def start(self, consumer):
        return self.run(consumer.start())

    def close(self, client, **kwargs):
        self.run(client.close(**kwargs))

    def close_later(self, consumer):
        return asyncio.run_coroutine_threadsafe(consumer.close(), self.loop)

    def finished(self, closing, timeout=None):
        try:
            closing.result(timeout)
        except TimeoutError:
            return False
        return True

    def publish(self, producer, method, *args, **kwargs):
        return self.run(getattr(producer, method)(*args, **kwargs))

    def publish_pipelined(self, producer, topic, bodies):
        async def pipelined():
            await producer.connect()
            futures = [producer.publish_async(topic, body) for body in bodies]
            in_flight = producer.connection.pending_requests
            return in_flight, await asyncio.gather(*futures)
        return self.run(pipelined())

    def gate(self):
        return _AioGate(self.loop)

    def handler(self, func, gate=None):
        async def handle(message):
            func(message)
            if gate is not None:
                await gate.wait()
        return handle

    def wait_until(self, predicate, timeout=10.0, message="condition"):
        return wait_until(predicate, timeout, message=message)

    def shutdown(self):
        async def cancel_the_rest():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


DRIVERS = {"gevent": GeventDriver, "aio": AioDriver}
