"""The gevent consumer's handler workers: greenlets serving the queue of
:class:`~.pool_core.PoolCore` (which says why a pool, and when a worker calls another).
Idle workers park on a :class:`gevent.hub.Waiter` and are woken through the hub."""

import gevent
from gevent.hub import Waiter, get_hub

from .pool_core import PoolCore


class WorkerPool(PoolCore):
    """Run ``func(item)`` for every submitted item, up to ``size`` greenlets at once."""

    def __init__(self, func, size):
        super().__init__(func, size)
        self._hub = get_hub()

    def _start_worker(self):
        return gevent.spawn(self._work)

    def _wake(self, waiter):
        self._hub.loop.run_callback(waiter.switch, None)

    def _stop_worker(self, worker):
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
