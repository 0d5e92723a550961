"""Consuming a topic's channel on asyncio, from one or many nsqd, found directly or via
nsqlookupd.

The same Consumer as the gevent one (:mod:`greensq.client.consumer`): same options, same
decisions, made by the same core (:class:`~..consumer_core.ConsumerCore`: RDY spread over
connections, backoff, FIN on return, REQ with a growing delay on an exception, give-up
after ``max_attempts``). What differs is how messages are handled:

* with a ``handler`` (``async def handler(message)``, or a plain function), each message
  is awaited in a worker task (:mod:`.workers`), up to ``concurrency`` at once;
* without one, the consumer is an async iterator: ``async for message in consumer``
  yields the messages, and the loop answers each (``message.finish()``,
  ``message.requeue()``; ``message.touch()`` to keep it longer).

:meth:`Consumer.close` stops discovery, sends CLS (nsqd stops sending and answers
``CLOSE_WAIT``), requeues at once the messages that no handler or loop has taken yet,
gives the running handlers (and the loop's messages) up to ``timeout`` to be answered,
then closes the connections.
"""

import asyncio
import collections
import inspect
import logging
import random

from ..consumer_core import ConsumerCore
from ..errors import ConnectionClosedError, NSQError, ProtocolError
from ..http_answers import HTTPError
from ..protocol import encode_command
from .connection import Connection
from .lookupd import lookup
from .workers import TaskPool

log = logging.getLogger("greensq.client")


class Consumer(ConsumerCore):
    __doc__ = ConsumerCore.__doc__ + """
    ``handler`` may be a coroutine function or a plain one; without a handler the
    consumer is an async iterator of messages, which the loop answers itself.
    """

    def __init__(self, topic, channel, handler=None, **options):
        super().__init__(topic, channel, handler, **options)
        self._tasks = set()             # background loops and connection attempts
        self._handler_is_async = inspect.iscoroutinefunction(handler)
        self._pool = TaskPool(self._handle, self.concurrency or self.max_in_flight)
        self._iterated = None if handler is not None else collections.deque()   # for the loop
        self._iterator_waiter = None
        self._closed = asyncio.Event()

    # -- I/O hooks of the core ------------------------------------------------------------

    connection_class = Connection
    _new_event = asyncio.Event

    def _call_later(self, delay, func):
        return asyncio.get_running_loop().call_later(delay, func)

    def _cancel(self, handle):
        handle.cancel()

    def _spawn(self, coroutine):
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- public API -----------------------------------------------------------------------

    async def start(self):
        """Connect to the given nsqd and start polling lookupd. Returns self.

        Direct nsqd that cannot be reached now are retried in the background. An nsqd
        that rejects the subscription (a bad topic or channel name, ...) raises its typed
        error here: retrying would not help.
        """
        if self._started:
            return self
        self._started = True
        for address in self.nsqd_tcp_addresses:
            try:
                await self._connect(address, direct=True)
            except ProtocolError:
                await self.close(timeout=0)
                raise
            except (OSError, NSQError) as err:
                log.warning("%s: cannot connect (%s); retrying", address, err)
                self._reconnect(address)
        if self.lookupd_http_addresses:
            self._spawn(self._lookupd_loop(await self.query_lookupd()))
        self._spawn(self._redistribute_loop())
        return self

    async def close(self, timeout=10.0):
        """Stop taking messages: CLS, requeue the messages nobody has taken, let handlers
        finish (up to ``timeout``), disconnect."""
        if self._closing:
            await self.join(timeout)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for task in list(self._tasks):
            task.cancel()
        states = self._closing_states()
        answers = [state.conn.request(encode_command("CLS")) for state in states
                   if state.conn is not None and not state.conn.closed]
        if self._iterated is None:
            self._requeue_untaken(self._pool.take_pending())
        else:
            self._requeue_untaken(self._iterated)
            self._iterated.clear()
        await _wait_until(asyncio.gather(*answers, return_exceptions=True), deadline)
        await _wait_until(self._handlers_idle.wait(), deadline)
        for state in states:
            await _wait_until(state.drained.wait(), deadline)
        for state in states:
            if state.conn is not None:
                state.conn.close()
        self._pool.stop()
        self._nsqd.clear()
        self._wake_iterator()
        self._closed.set()

    async def join(self, timeout=None):
        """Wait until :meth:`close` has finished; False if ``timeout`` ran out first."""
        try:
            async with asyncio.timeout(timeout):
                await self._closed.wait()
        except TimeoutError:
            return False
        return True

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.close()

    def set_max_in_flight(self, count):
        if not self.concurrency:
            self._pool.resize(count)
        super().set_max_in_flight(count)

    set_max_in_flight.__doc__ = ConsumerCore.set_max_in_flight.__doc__

    # -- the async iterator ---------------------------------------------------------------

    def __aiter__(self):
        if self._iterated is None:
            raise TypeError("a Consumer with a handler is not iterated")
        return self

    async def __anext__(self):
        iterated = self._iterated
        while True:
            while not iterated:
                if self._closing:
                    raise StopAsyncIteration
                self._iterator_waiter = asyncio.get_running_loop().create_future()
                await self._iterator_waiter
            msg = iterated.popleft()
            self._handler_done()
            if not self.max_attempts or msg.attempts <= self.max_attempts:
                return msg
            self._give_up(msg)

    def _wake_iterator(self):
        waiter = self._iterator_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- connections ----------------------------------------------------------------------

    async def _connect(self, address, direct):
        state = self._new_nsqd(address, direct)
        if state is None:
            return
        self._connecting.add(address)
        try:
            conn = state.conn
            await conn.connect()
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await conn.request(encode_command("SUB", self.topic, self.channel))
            except TimeoutError:
                conn.close()
                raise ConnectionClosedError(f"{address}: SUB timed out") from None
            except BaseException:
                conn.close()
                raise
            if self._closing:
                conn.close()
                return
            self._subscribed(state)
        finally:
            self._connecting.discard(address)

    def _reconnect(self, address):
        self._spawn(self._reconnect_loop(address))

    async def _reconnect_loop(self, address):
        delay = self.reconnect_interval
        while not self._closing and address not in self._nsqd:
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            if self._closing:
                return
            try:
                await self._connect(address, direct=True)
                return
            except (OSError, NSQError) as err:
                log.info("%s: reconnect failed (%s)", address, err)
                delay = min(delay * 2, self.max_reconnect_interval)

    async def _retire(self, state):
        """Stop consuming from an nsqd that lookupd no longer lists."""
        self._retiring(state)
        conn = state.conn
        try:
            async with asyncio.timeout(self.connect_timeout):
                await conn.request(encode_command("CLS"))
                await state.drained.wait()
        except (TimeoutError, NSQError):
            pass
        finally:
            conn.close()

    # -- lookupd --------------------------------------------------------------------------

    async def query_lookupd(self):
        """Ask every lookupd where the topic is; connect new nsqd, retire vanished ones.

        Returns the set of nsqd TCP addresses found, or None if no lookupd answered.
        """
        answers = []
        for address in self.lookupd_http_addresses:
            try:
                answers.append((address, await lookup(address, self.topic,
                                                      timeout=self.connect_timeout)))
            except (HTTPError, OSError, ValueError, TimeoutError) as err:
                answers.append((address, err))
        found, new, vanished = self._lookupd_answered(answers)
        for address in new:
            self._spawn(self._connect_quietly(address))
        for state in vanished:
            self._spawn(self._retire(state))
        return found

    async def _connect_quietly(self, address):
        try:
            await self._connect(address, direct=False)
        except (OSError, NSQError) as err:
            log.warning("%s: cannot connect (%s)", address, err)

    async def _lookupd_loop(self, found):
        await asyncio.sleep(self._lookupd_spread(found))
        while not self._closing:
            await asyncio.sleep(self._lookupd_wait(found))
            found = await self.query_lookupd()

    # -- messages -------------------------------------------------------------------------

    def _on_messages(self, conn, messages):
        self._received(conn.responder, messages)
        if self._iterated is None:
            self._pool.submit_many(messages)
        else:
            self._iterated.extend(messages)
            self._wake_iterator()

    async def _handle(self, msg):
        try:
            if self.max_attempts and msg.attempts > self.max_attempts:
                self._give_up(msg)
                return
            try:
                if self._handler_is_async:
                    await self.handler(msg)
                else:
                    self.handler(msg)
            except Exception:
                self._handler_failed(msg)
                return
            if not msg._async and not msg._responded:
                msg._responded = True
                msg._responder.finish(msg)
        finally:   # _handler_done(), inline: this runs for every message
            self._handlers -= 1
            if self._handlers == 0:
                self._handlers_idle.set()

    # -- RDY ------------------------------------------------------------------------------

    async def _redistribute_loop(self):
        while not self._closing:
            await asyncio.sleep(self.rdy_redistribute_interval)
            self.redistribute()


async def _wait_until(awaitable, deadline):
    """Await ``awaitable`` until the loop's time ``deadline``; give up quietly then."""
    try:
        async with asyncio.timeout_at(deadline):
            await awaitable
    except TimeoutError:
        pass
