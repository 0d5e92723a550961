"""Choosing where a message goes: nsq_to_http's and nsq_to_nsq's ``--mode``.

* ``round-robin``: each destination in turn.
* ``hostpool`` (the default): in turn too, but a destination that failed is skipped
  until its retry time (30 s, doubling on each failed retry, at most 15 min), as
  go-hostpool's standard pool does; when every destination is down, all are tried
  again.
* ``epsilon-greedy``: like ``hostpool``, but mostly the destination with the best recent
  response times (an exponentially weighted mean), and a random live one 30% of the time
  to keep measuring the others (a simpler rule than go-hostpool's decaying buckets).

Each :meth:`Destinations.pick` returns an address; :meth:`Destinations.mark` reports
how a request to it went.
"""

import random
import time

INITIAL_RETRY_DELAY = 30.0
MAX_RETRY_DELAY = 900.0
EXPLORE = 0.3
SMOOTHING = 0.1


class _Host:
    __slots__ = ("address", "dead", "retry_at", "retry_delay", "mean_time")

    def __init__(self, address):
        self.address = address
        self.dead = False
        self.retry_at = 0.0
        self.retry_delay = INITIAL_RETRY_DELAY
        self.mean_time = 0.0


class Destinations:
    """The destination addresses of a tool and its ``--mode``."""

    def __init__(self, addresses, mode):
        self.addresses = list(addresses)
        self.mode = mode
        self._hosts = {a: _Host(a) for a in self.addresses}
        self._next = 0

    def pick(self):
        if self.mode == "round-robin":    # from the second address, as NSQ's tools do
            self._next += 1
            return self.addresses[self._next % len(self.addresses)]
        if self.mode == "epsilon-greedy" and random.random() >= EXPLORE:
            live = [h for h in self._hosts.values() if not h.dead]
            if live:
                return min(live, key=lambda h: h.mean_time).address
        return self._next_live()

    def _next_live(self):
        now = time.monotonic()
        count = len(self.addresses)
        for step in range(count):
            index = (self._next + step) % count
            host = self._hosts[self.addresses[index]]
            if host.dead and host.retry_at > now:
                continue
            if host.dead:   # its retry is due: try it, and wait longer before the next one
                host.retry_delay = min(host.retry_delay * 2, MAX_RETRY_DELAY)
                host.retry_at = now + host.retry_delay
            self._next = index + 1
            return host.address
        for host in self._hosts.values():   # all down: try them all again
            host.dead = False
        self._next = 1
        return self.addresses[0]

    def mark(self, address, ok, seconds=None):
        """Record the outcome (and time taken) of a request to ``address``."""
        host = self._hosts[address]
        if seconds is not None:
            host.mean_time += SMOOTHING * (seconds - host.mean_time)
        if ok:
            host.dead = False
        elif not host.dead:
            host.dead = True
            host.retry_delay = INITIAL_RETRY_DELAY
            host.retry_at = time.monotonic() + INITIAL_RETRY_DELAY
