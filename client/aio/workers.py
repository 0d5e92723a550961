"""The asyncio consumer's handler workers: tasks serving the queue of
:class:`~..pool_core.PoolCore` (which says why a pool, and when a worker calls another).
Idle workers park on a future; a handler that never waits lets one worker drain a whole
burst in one turn of the event loop."""

import asyncio

from ..pool_core import PoolCore


class TaskPool(PoolCore):
    """Run ``await func(item)`` for every submitted item, up to ``size`` tasks at once."""

    def _start_worker(self):
        return asyncio.get_running_loop().create_task(self._work())

    def _wake(self, future):
        future.set_result(None)

    def _stop_worker(self, task):
        task.cancel()

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
