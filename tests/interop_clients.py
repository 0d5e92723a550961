"""Run one interoperability scenario with a third-party NSQ client and print JSON.

Run as a script in its own process (``python interop_clients.py CONFIG_JSON``) so that
gevent's monkey-patching (gnsq) or tornado's IOLoop state (pynsq) never touches the pytest
process. CONFIG_JSON keys:

    client     "pynsq" or "gnsq"
    scenario   one of SCENARIOS
    tcp, http  "127.0.0.1:port" of the nsqd under test
    topic      topic to use (the test creates the channels first)
    deadline   seconds the whole scenario may take

Stdout gets one JSON document: what each reader received (body, attempts, seconds since the
first publish), the publish responses, any IDENTIFY responses seen, and a /stats snapshot
(taken while the readers are still connected, once nothing is left in flight, so per-client
counters can be checked). The script decides nothing; the test asserts.
"""

import json
import time
import urllib.request

import client_scripts
from client_scripts import finish_when, reply_text, run_ioloop, wait_then, when_connected

DEFER_MS = 1000
N = 10


class Scenario:
    """What to publish, who reads, and how each reader responds. Client independent."""

    name = None
    channels = ("ch",)          # one reader per entry; repeat a name for two readers
    msg_timeout_ms = None       # IDENTIFY msg_timeout, for clients that send it
    max_in_flight = N           # per reader

    def __init__(self):
        self.received = []      # dicts: reader, channel, body, attempts, t
        self.t0 = None

    def publishes(self):
        """A list of ("pub", body) / ("mpub", [bodies]) / ("dpub", body, ms)."""
        raise NotImplementedError

    def on_message(self, reader, channel, msg):
        """Return "finish", "fail", "requeue" (explicit, no delay) or "hold"."""
        return "finish"

    def is_done(self):
        raise NotImplementedError

    def record(self, reader, channel, msg):
        self.received.append({
            "reader": reader, "channel": channel, "body": msg.body.decode(),
            "attempts": msg.attempts,
            "t": None if self.t0 is None else time.monotonic() - self.t0})


class PubSub(Scenario):
    name = "pubsub"

    def publishes(self):
        return ([("pub", f"single-{i}".encode()) for i in range(N // 2)]
                + [("mpub", [f"multi-{i}".encode() for i in range(N // 2)])])

    def is_done(self):
        return len({r["body"] for r in self.received}) >= N


class Multicast(Scenario):
    name = "multicast"
    channels = ("ch1", "ch2")

    def publishes(self):
        return [("mpub", [f"m-{i}".encode() for i in range(N)])]

    def is_done(self):
        return all(len({r["body"] for r in self.received if r["channel"] == ch}) >= N
                   for ch in self.channels)


class Distribution(Scenario):
    """Two readers (RDY 1 each) on one channel. Each holds its first message until the
    other has one too, so the second message has to go to the other reader."""

    name = "distribution"
    channels = ("ch", "ch")
    max_in_flight = 1

    def __init__(self):
        super().__init__()
        self.held = []

    def publishes(self):
        return [("mpub", [f"d-{i}".encode() for i in range(N)])]

    def on_message(self, reader, channel, msg):
        if len({r["reader"] for r in self.received}) < 2:
            self.held.append(msg)
            return "hold"
        for held in self.held:
            held.finish()
        self.held = []
        return "finish"

    def is_done(self):
        return len({r["body"] for r in self.received}) >= N and not self.held


class Requeue(Scenario):
    """First attempt fails: one message the client's idiomatic failure way (pynsq
    returns False, gnsq raises), one by an explicit message.requeue()."""

    name = "requeue"

    def publishes(self):
        return [("pub", b"fail"), ("pub", b"explicit")]

    def on_message(self, reader, channel, msg):
        if msg.attempts == 1:
            return "fail" if msg.body == b"fail" else "requeue"
        return "finish"

    def is_done(self):
        return sum(1 for r in self.received if r["attempts"] >= 2) >= 2


class Timeout(Scenario):
    """The first attempt is never answered; nsqd must time it out and redeliver."""

    name = "timeout"
    msg_timeout_ms = 1000

    def __init__(self):
        super().__init__()
        self.held = []

    def publishes(self):
        return [("pub", b"slow")]

    def on_message(self, reader, channel, msg):
        if msg.attempts == 1:
            self.held.append(msg)   # keep it alive, never respond
            return "hold"
        return "finish"

    def is_done(self):
        return any(r["attempts"] >= 2 for r in self.received)


class Defer(Scenario):
    name = "defer"

    def publishes(self):
        return [("dpub", b"deferred", DEFER_MS), ("pub", b"immediate")]

    def is_done(self):
        return {r["body"] for r in self.received} >= {"deferred", "immediate"}


SCENARIOS = {cls.name: cls for cls in (PubSub, Multicast, Distribution, Requeue, Timeout, Defer)}


class Msg:
    """The client-independent view of a message handed to Scenario.on_message."""

    def __init__(self, body, attempts, finish):
        self.body, self.attempts, self.finish = body, attempts, finish


def http_json(http, path):
    with urllib.request.urlopen(f"http://{http}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def settled_stats(cfg, deadline):
    """/stats for the topic once no channel has anything in flight, queued or deferred."""
    path = f"/stats?format=json&topic={cfg['topic']}"
    while True:
        stats = http_json(cfg["http"], path)
        channels = [c for t in stats["topics"] for c in t["channels"]]
        if all(c["in_flight_count"] == 0 and c["depth"] == 0 and c["deferred_count"] == 0
               for c in channels):
            return stats
        if time.monotonic() > deadline:
            stats["unsettled"] = True
            return stats
        time.sleep(0.02)


# -- pynsq (tornado) ---------------------------------------------------------------------

def run_pynsq(cfg, scen, out, deadline):
    import nsq
    import tornado.ioloop

    loop = tornado.ioloop.IOLoop.current()
    identify = out["identify"] = []

    class Reader(nsq.Reader):
        def _on_connection_identify_response(self, conn, data, **kwargs):
            identify.append(data)
            return super()._on_connection_identify_response(conn, data, **kwargs)

    check = finish_when(loop, lambda: scen.is_done() and (
        len(out["publish_results"]) >= len(scen.publishes())), loop.stop)

    def handler_for(index, channel):
        def handler(message):
            msg = Msg(message.body, message.attempts, message.finish)
            scen.record(index, channel, msg)
            action = scen.on_message(index, channel, msg)
            check()   # stops the loop after this handler's response is sent
            if action == "finish":
                return True
            if action == "fail":
                return False
            if action == "requeue":
                message.requeue(backoff=False, delay=0)
                return None
            message.enable_async()
            return None
        return handler

    extra = {"msg_timeout": scen.msg_timeout_ms / 1000} if scen.msg_timeout_ms else {}
    readers = [Reader(topic=cfg["topic"], channel=channel, message_handler=handler_for(i, channel),
                      nsqd_tcp_addresses=[cfg["tcp"]], max_in_flight=scen.max_in_flight,
                      requeue_delay=0, max_backoff_duration=0.5, **extra)
               for i, channel in enumerate(scen.channels)]
    writer = nsq.Writer([cfg["tcp"]])

    def on_response(conn, data):
        out["publish_results"].append(reply_text(data))
        check()

    def publish():
        scen.t0 = time.monotonic()
        for op in scen.publishes():
            if op[0] == "pub":
                writer.pub(cfg["topic"], op[1], callback=on_response)
            elif op[0] == "mpub":
                writer.mpub(cfg["topic"], op[1], callback=on_response)
            else:
                writer.dpub(cfg["topic"], op[2], op[1], callback=on_response)

    when_connected(loop, writer, publish)
    run_ioloop(loop, deadline, out)
    if out["error"] is None:
        out["stats"] = settled_stats(cfg, deadline)
    for reader in readers:
        reader.close()


# -- gnsq (gevent) -----------------------------------------------------------------------

def run_gnsq(cfg, scen, out, deadline):
    import gevent
    import gevent.event
    import gnsq
    import gnsq.consumer

    finished = gevent.event.Event()
    identify = out["identify"]

    class Conn(gnsq.NsqdTCPClient):
        """gnsq's connection, recording the IDENTIFY response it parses."""

        def identify(self):
            data = super().identify()
            identify.append(data)
            return data

    gnsq.consumer.NsqdTCPClient = Conn   # the name Consumer.connect_to_nsqd instantiates

    def handler_for(index, channel):
        def handler(consumer, message):
            msg = Msg(message.body, message.attempts, message.finish)
            scen.record(index, channel, msg)
            action = scen.on_message(index, channel, msg)
            if scen.is_done():
                finished.set()   # the main greenlet runs once this handler has returned
            if action == "fail":
                raise RuntimeError("interop: failing the first attempt on purpose")
            if action == "requeue":
                message.requeue(0, backoff=False)
            elif action == "hold":
                message.enable_async()
        return handler

    consumers = [gnsq.Consumer(cfg["topic"], channel, [cfg["tcp"]],
                               message_handler=handler_for(i, channel),
                               max_in_flight=scen.max_in_flight,
                               requeue_delay=0, max_backoff_duration=0.2)
                 for i, channel in enumerate(scen.channels)]
    for consumer in consumers:
        consumer.start(block=False)

    producer = gnsq.Producer([cfg["tcp"]])
    producer.start()
    scen.t0 = time.monotonic()
    for op in scen.publishes():
        if op[0] == "pub":
            result = producer.publish(cfg["topic"], op[1])
        elif op[0] == "mpub":
            result = producer.multipublish(cfg["topic"], op[1])
        else:
            result = producer.publish(cfg["topic"], op[1], defer=op[2])
        out["publish_results"].append(reply_text(result))

    wait_then(finished, deadline, out, lambda: settled_stats(cfg, deadline))
    for consumer in consumers:
        consumer.close()
    producer.close()


def prepare(cfg):
    scen = SCENARIOS[cfg["scenario"]]()
    out = {"received": scen.received, "publish_results": [], "identify": [],
           "stats": None, "error": None}
    return out, (scen,)


def main():
    client_scripts.main({"pynsq": run_pynsq, "gnsq": run_gnsq}, prepare)


if __name__ == "__main__":
    main()
