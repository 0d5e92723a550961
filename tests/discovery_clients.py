"""Consume a topic through nsqlookupd with a third-party client and print JSON.

Run as a script in its own process (``python discovery_clients.py CONFIG_JSON``), like
interop_clients.py, so gevent's monkey-patching (gnsq) and tornado's IOLoop (pynsq) never
touch pytest. CONFIG_JSON keys:

    client     "pynsq" or "gnsq"
    lookupd    list of nsqlookupd HTTP addresses ("127.0.0.1:port")
    topic, channel
    expected   number of distinct bodies to wait for
    deadline   seconds the whole run may take

Stdout gets {"received": [bodies...], "error": null | text}. The test asserts.
"""

import client_scripts
from client_scripts import run_ioloop, wait_then


def run_pynsq(cfg, out, deadline):
    import nsq
    import tornado.ioloop

    loop = tornado.ioloop.IOLoop.current()

    def handler(message):
        out["received"].append(message.body.decode())
        if len(set(out["received"])) >= cfg["expected"]:
            loop.add_callback(loop.stop)
        return True

    reader = nsq.Reader(topic=cfg["topic"], channel=cfg["channel"], message_handler=handler,
                        lookupd_http_addresses=[f"http://{a}" for a in cfg["lookupd"]],
                        lookupd_poll_interval=1, max_in_flight=100)

    run_ioloop(loop, deadline, out)
    reader.close()


def run_gnsq(cfg, out, deadline):
    import gevent.event
    import gnsq

    done = gevent.event.Event()

    def handler(consumer, message):
        out["received"].append(message.body.decode())
        if len(set(out["received"])) >= cfg["expected"]:
            done.set()

    consumer = gnsq.Consumer(cfg["topic"], cfg["channel"],
                             lookupd_http_addresses=cfg["lookupd"],
                             lookupd_poll_interval=1, message_handler=handler,
                             max_in_flight=100)
    consumer.start(block=False)
    wait_then(done, deadline, out, lambda: None)
    consumer.close()


def main():
    client_scripts.main({"pynsq": run_pynsq, "gnsq": run_gnsq},
                        lambda cfg: ({"received": [], "stats": None, "error": None}, ()))


if __name__ == "__main__":
    main()
