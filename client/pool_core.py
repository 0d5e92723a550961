"""A consumer's pool of handler workers, without I/O: the queue, and when to call one
more worker. The gevent :class:`~.workers.WorkerPool` (greenlets) and the asyncio
:class:`~.aio.workers.TaskPool` (tasks) only start, park and wake their workers.

Starting a greenlet or a task per message costs more than a no-op handler itself, which
would cap a consumer far below what nsqd can deliver. Instead, messages go into a queue
served by workers, at most ``size`` of them (the consumer's concurrency):

* a worker takes the next message and, if more are waiting and no other worker has been
  called, first calls one more (waking an idle worker or starting a new one);
* so a handler that waits (I/O, sleep) leaves the rest of the queue to another worker,
  and up to ``size`` messages are handled concurrently;
* a handler that never waits lets one worker drain a whole burst without a single
  switch, the called worker finding nothing left when it runs.
"""

import collections


class PoolCore:
    """Run ``func(item)`` for every submitted item, up to ``size`` concurrently."""

    def __init__(self, func, size):
        self.func = func
        self.size = max(1, size)
        self._queue = collections.deque()
        self._idle = []          # what parked workers wait on
        self._workers = set()
        self._calling = 0        # workers woken or started that have not run yet
        self._stopped = False

    # The I/O side's: start a worker running _work(), wake a parked one, stop one.

    def _start_worker(self):
        raise NotImplementedError

    def _wake(self, waiter):
        raise NotImplementedError

    def _stop_worker(self, worker):
        raise NotImplementedError

    def submit_many(self, items):
        self._queue.extend(items)
        if not self._calling:
            self._call_worker()

    def _call_worker(self):
        if self._idle:
            self._calling += 1
            self._wake(self._idle.pop())
        elif len(self._workers) < self.size:
            self._calling += 1
            self._workers.add(self._start_worker())

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
        """Stop every worker (their handlers included)."""
        self._stopped = True
        self._idle.clear()
        for worker in list(self._workers):
            self._stop_worker(worker)
