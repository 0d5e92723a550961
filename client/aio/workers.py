"""A pool of handler tasks that costs almost nothing when handlers do not wait.

A task per message costs more than a no-op handler itself. Instead, messages go into a
queue served by worker tasks, at most ``size`` of them (the consumer's concurrency), as
the gevent client's :mod:`greensq.client.workers` does with greenlets:

* a worker takes the next message and, if more are waiting and no other worker has been
  called, first calls one more (waking an idle worker or starting a new task);
* so a handler that waits (I/O, sleep) leaves the rest of the queue to other workers,
  and up to ``size`` messages are handled concurrently;
* a handler that never waits lets one worker drain a whole burst in one turn of the
  event loop, the called worker finding nothing left when it runs.
"""

import asyncio
import collections


class TaskPool:
    """Run ``await func(item)`` for every submitted item, up to ``size`` concurrently."""

    def __init__(self, func, size):
        self.func = func
        self.size = max(1, size)
        self._queue = collections.deque()
        self._idle = []          # futures of parked workers
        self._workers = set()
        self._calling = 0        # workers woken or started that have not run yet
        self._stopped = False

    def submit_many(self, items):
        self._queue.extend(items)
        if not self._calling:
            self._call_worker()

    def _call_worker(self):
        if self._idle:
            self._calling += 1
            self._idle.pop().set_result(None)
        elif len(self._workers) < self.size:
            self._calling += 1
            self._workers.add(asyncio.get_running_loop().create_task(self._work()))

    def resize(self, size):
        self.size = max(1, size)

    @property
    def pending(self):
        return len(self._queue)

    def take_pending(self):
        """Empty the queue: the items no worker has started."""
        items = list(self._queue)
        self._queue.clear()
        return items

    def stop(self):
        """Cancel every worker (their handlers included)."""
        self._stopped = True
        for worker in list(self._workers):
            worker.cancel()

    async def _work(self):
        queue = self._queue
        func = self.func
        loop = asyncio.get_running_loop()
        self._calling -= 1
        try:
            while not self._stopped:
                while queue:
                    item = queue.popleft()
                    if queue and not self._calling:
                        self._call_worker()
                    await func(item)
                if len(self._workers) > self.size:
                    return
                waiter = loop.create_future()
                self._idle.append(waiter)
                await waiter
                self._calling -= 1
        finally:
            self._workers.discard(asyncio.current_task())
