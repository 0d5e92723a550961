"""The hub's idle spin (nsqd's ``--idle-spin``, http/idle_spin.py) on the
test process's own hub: it polls for a while after each wake-up, then sleeps, and spins
again after the next wake-up; it never keeps an idle process busy."""

import time

import gevent
import pytest

from greensq.http.idle_spin import IdleSpin

WINDOW = 0.05


def iterations_and_cpu_while_asleep(seconds):
    """The hub's loop iterations and this process's CPU time while the test sleeps
    (one timer: without a spin, the loop waits in a single poll)."""
    loop = gevent.get_hub().loop
    iterations, cpu = loop.iteration, time.process_time()
    gevent.sleep(seconds)     # what the loop does meanwhile is what is measured
    return loop.iteration - iterations, time.process_time() - cpu


@pytest.fixture
def spin():
    spin = IdleSpin(WINDOW)
    gevent.sleep(0.001)     # a first wake-up starts it
    yield spin
    spin.stop()


def test_without_a_spin_the_loop_sleeps_in_one_poll():
    assert iterations_and_cpu_while_asleep(0.2)[0] <= 2


def test_the_loop_polls_after_a_wake_up_then_sleeps(spin):
    assert spin.spinning
    for _ in range(2):    # and again after the timer that ended the last sleep woke it
        iterations, cpu = iterations_and_cpu_while_asleep(12 * WINDOW)
        assert iterations > 10          # it polled instead of sleeping ...
        assert cpu < 6 * WINDOW         # ... for about WINDOW, not the whole sleep


def test_a_stopped_spin_leaves_the_loop_asleep(spin):
    spin.stop()
    assert not spin.spinning
    assert iterations_and_cpu_while_asleep(0.2)[0] <= 2
