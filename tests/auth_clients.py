"""Publish and consume with a third-party NSQ client that sends an AUTH secret; print JSON.

Run as ``python auth_clients.py CONFIG_JSON`` in its own process (gevent monkey-patching
for gnsq, tornado's IOLoop for pynsq stay out of pytest). CONFIG_JSON keys: client
("pynsq" or "gnsq"), secret, topic, channel, tcp, http ("127.0.0.1:port"), deadline (s).

Stdout: {"received": [bodies], "publish_results": [...], "auth": [AUTH responses the
client parsed], "stats": /stats while the reader is connected, "error": null or text}.
"""


import client_scripts
from client_scripts import finish_when, reply_text, run_ioloop, topic_stats, wait_then, when_connected

N = 5


def run_pynsq(cfg, out, deadline):
    import nsq
    import tornado.ioloop

    loop = tornado.ioloop.IOLoop.current()

    class Recording:
        """Records the AUTH responses the client parsed."""

        def _on_connection_auth_response(self, conn, data, **kwargs):
            out["auth"].append(data)
            return super()._on_connection_auth_response(conn, data, **kwargs)

    class Reader(Recording, nsq.Reader):
        pass

    class Writer(Recording, nsq.Writer):
        pass

    def finish():
        out["stats"] = topic_stats(cfg)
        loop.stop()

    check = finish_when(loop, lambda: (len(out["received"]) >= N
                                       and len(out["publish_results"]) >= N), finish)

    def handler(message):
        out["received"].append(message.body.decode())
        check()
        return True

    reader = Reader(topic=cfg["topic"], channel=cfg["channel"], message_handler=handler,
                    nsqd_tcp_addresses=[cfg["tcp"]], max_in_flight=N,
                    auth_secret=cfg["secret"])
    writer = Writer([cfg["tcp"]], auth_secret=cfg["secret"])

    def on_response(conn, data):
        out["publish_results"].append(reply_text(data))
        check()

    def publish():
        for i in range(N):
            writer.pub(cfg["topic"], f"m-{i}".encode(), callback=on_response)

    when_connected(loop, writer, publish)
    run_ioloop(loop, deadline, out)
    reader.close()


def run_gnsq(cfg, out, deadline):
    import gevent.event
    import gnsq

    done = gevent.event.Event()

    def handler(consumer, message):
        out["received"].append(message.body.decode())
        if len(out["received"]) >= N:
            done.set()

    def on_auth(sender, conn=None, response=None, **kwargs):
        out["auth"].append(response)

    consumer = gnsq.Consumer(cfg["topic"], cfg["channel"], [cfg["tcp"]],
                             message_handler=handler, max_in_flight=N,
                             auth_secret=cfg["secret"].encode())
    consumer.on_auth.connect(on_auth)
    producer = gnsq.Producer([cfg["tcp"]], auth_secret=cfg["secret"].encode())
    producer.on_auth.connect(on_auth)
    consumer.start(block=False)
    producer.start()
    for i in range(N):
        result = producer.publish(cfg["topic"], f"m-{i}".encode())
        out["publish_results"].append(reply_text(result))
    wait_then(done, deadline, out, lambda: topic_stats(cfg))
    consumer.close()
    producer.close()


def main():
    client_scripts.main({"pynsq": run_pynsq, "gnsq": run_gnsq}, lambda cfg: (
        {"received": [], "publish_results": [], "auth": [], "stats": None, "error": None}, ()))


if __name__ == "__main__":
    main()
