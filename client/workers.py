"""A pool of handler greenlets that costs almost nothing when handlers do not block.

Spawning a greenlet per message costs more than a no-op handler itself, which caps a
consumer far below what nsqd can deliver. Instead, messages go into a queue served by
worker greenlets, at most ``size`` of them (the consumer's ``max_in_flight``):

* a worker takes the next message and, if more are waiting and no other worker has been
  called, first calls one more (waking an idle worker or starting a new one);
* so a handler that blocks (I/O, sleep) hands the rest of the queue to another worker,
  and up to ``size`` messages are handled concurrently, each in its own greenlet;
* a handler that never blocks lets one worker drain a whole burst without a single
  greenlet switch.

Idle workers park on a :class:`gevent.hub.Waiter` and are woken through the hub.
"""

import collections
import logging

import gevent
from gevent.hub import Waiter, get_hub

log = logging.getLogger("greensq.client")


class WorkerPool:
    """Run ``func(item)`` for every submitted item, up to ``size`` concurrently."""

    def __init__(self, func, size):
        self.func = func
        self.size = max(1, size)
        self._queue = collections.deque()
        self._idle = []          # Waiters of parked workers
        self._workers = set()
        self._calling = 0        # workers woken or started that have not run yet
        self._hub = get_hub()
        self._stopped = False

    def submit(self, item):
        self._queue.append(item)
        if not self._calling:
            self._call_worker()

    def submit_many(self, items):
        self._queue.extend(items)
        if not self._calling:
            self._call_worker()

    def _call_worker(self):
        if self._idle:
            self._calling += 1
            self._hub.loop.run_callback(self._idle.pop().switch, None)
        elif len(self._workers) < self.size:
            self._calling += 1
            self._workers.add(gevent.spawn(self._work))

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
        """Kill every worker (their handlers included)."""
        self._stopped = True
        for worker in list(self._workers):
            worker.kill(block=False)

    def _work(self):
        queue = self._queue
        func = self.func
        self._calling -= 1
        try:
            while not self._stopped:
                while queue:
                    item = queue.popleft()
                    if queue and not self._calling:
                        self._call_worker()
                    func(item)
                if len(self._workers) > self.size:
                    return
                waiter = Waiter()
                self._idle.append(waiter)
                waiter.get()
                self._calling -= 1
        finally:
            self._workers.discard(gevent.getcurrent())
