"""The actor base's promise, which topics and channels rely on: handlers run one at a
time and in the order messages were sent, whether a message goes through the mailbox
(``send``) or is handled at once in the caller's greenlet (``call`` on an idle actor).

These run real actors on a gevent hub in the test process: the property is about
greenlet interleaving, which no client of a daemon can observe directly.
"""

import gevent
import pytest

from greensq.actors.actor import Actor, HandlerFailed, Receipt, in_turn
from support import gevent_wait_until


class Recorder(Actor):
    """Logs when each handler starts and ends, in which greenlet, and any overlap."""

    def __init__(self):
        super().__init__("recorder")
        self.log = []
        self.running = 0
        self.overlaps = 0
        self.batches = 0

    def on_work(self, tag, yields=0):
        self.running += 1
        if self.running > 1:
            self.overlaps += 1
        self.log.append(("start", tag, gevent.getcurrent()))
        for _ in range(yields):
            gevent.sleep(0)
        self.log.append(("end", tag, gevent.getcurrent()))
        self.running -= 1

    def on_stop(self):
        self.stop_loop()

    def after_batch(self):
        self.batches += 1


def tags(actor):
    return [(event, tag) for event, tag, _ in actor.log]


def test_call_on_an_idle_actor_runs_in_the_callers_greenlet():
    actor = Recorder().start()
    gevent.sleep(0)
    actor.call(actor.on_work, "now")
    assert tags(actor) == [("start", "now"), ("end", "now")]
    assert actor.log[0][2] is gevent.getcurrent()
    assert actor.batches == 1


def test_call_while_a_handler_is_running_waits_its_turn_in_order():
    actor = Recorder().start()
    gevent.sleep(0)
    first = gevent.spawn(actor.call, actor.on_work, "a", 5)    # runs inline and yields
    gevent.sleep(0)
    work = actor.on_work
    later = [gevent.spawn(actor.send, work, "b"), gevent.spawn(actor.call, work, "c"),
             gevent.spawn(actor.send, work, "d", 2), gevent.spawn(actor.call, work, "e")]
    gevent.joinall([first, *later], timeout=5, raise_error=True)
    gevent_wait_until(lambda: len(actor.log) == 10, message="five handlers")
    assert actor.overlaps == 0
    assert tags(actor) == [(event, tag) for tag in "abcde" for event in ("start", "end")]
    # Only the first ran in its caller's greenlet; the rest went through the mailbox.
    assert actor.log[0][2] is first
    assert all(greenlet is actor.greenlet for _, tag, greenlet in actor.log if tag != "a")


def test_call_behind_queued_messages_keeps_their_order():
    actor = Recorder().start()
    actor.send(actor.on_work, "queued", 1)     # not handled yet: the actor has not run
    actor.call(actor.on_work, "called")
    gevent_wait_until(lambda: len(actor.log) == 4, message="both handlers")
    assert tags(actor) == [("start", "queued"), ("end", "queued"),
                           ("start", "called"), ("end", "called")]
    assert actor.overlaps == 0


class Failing(Recorder):
    """Hands a receipt's work on to two more handlers, then raises."""

    def on_fail(self, receipt):
        receipt.expect(2)
        raise RuntimeError("boom")

    @in_turn
    def registry_call(self, tag):
        self.log.append(("registry", tag, gevent.getcurrent()))


@pytest.mark.parametrize("inline", [True, False], ids=["call", "send"])
def test_a_handler_that_raises_fails_its_receipts_and_the_actor_goes_on(caplog, inline):
    actor = Failing().start()
    gevent.sleep(0)
    receipt = Receipt()
    if inline:
        actor.call(actor.on_fail, receipt)
    else:
        actor.send(actor.on_fail, receipt)
    with gevent.Timeout(1):
        with pytest.raises(HandlerFailed):
            receipt.wait()          # not stranded by the two handlers it expected
    receipt.done()                  # what the expected handlers would say changes nothing
    assert receipt.pending == 0
    assert "unexpected error in on_fail" in caplog.text
    actor.call(actor.on_work, "after")
    gevent_wait_until(lambda: tags(actor) == [("start", "after"), ("end", "after")],
                      message="the next message handled")
    assert actor.batches >= 1 and not actor.turn.locked()


def test_ask_raises_the_handlers_failure():
    actor = Failing().start()
    with gevent.Timeout(1), pytest.raises(HandlerFailed):
        actor.ask(actor.on_fail, Receipt())
    actor.ask(actor.on_work, "after")
    assert tags(actor) == [("start", "after"), ("end", "after")]


def test_a_method_in_the_actors_turn_waits_for_a_handler_that_yields():
    actor = Failing().start()
    gevent.sleep(0)
    handler = gevent.spawn(actor.call, actor.on_work, "slow", 5)
    gevent.sleep(0)
    registry = gevent.spawn(actor.registry_call, "between")
    gevent.joinall([handler, registry], timeout=5, raise_error=True)
    assert tags(actor) == [("start", "slow"), ("end", "slow"), ("registry", "between")]


def test_an_actor_stopped_by_a_handler_run_inline_ends_its_greenlet():
    """A topic or channel deleted while idle stops in the caller's greenlet (``ask``);
    its own greenlet, waiting for a next message, must end too, not wait forever."""
    actor = Recorder().start()
    gevent.sleep(0)                       # the actor's greenlet waits for a message
    actor.ask(actor.on_stop)
    actor.greenlet.join(timeout=5)
    assert actor.greenlet.dead
