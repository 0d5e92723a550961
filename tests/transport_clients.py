"""Publish and consume through TLS / snappy / deflate with a third-party NSQ client.

Run as a script in its own process (``python transport_clients.py CONFIG_JSON``) so gnsq's
monkey-patching and tornado's IOLoop stay out of pytest. CONFIG_JSON keys:

    client      "pynsq" or "gnsq"
    tcp, http   "127.0.0.1:port" of the nsqd under test (http: plain HTTP, for /stats)
    topic       the topic (the test creates it and channel "ch")
    options     connection options given to both the producer and the consumer:
                tls_v1, snappy, deflate, deflate_level, and "tls" = {"ca": path,
                "cert": path, "key": path} (all optional)
    deadline    seconds the whole run may take

It publishes 3 PUBs and one MPUB of 3, reads all 6 on channel "ch", and prints JSON:
the bodies received, the publish answers, the IDENTIFY responses parsed, a /stats
snapshot taken while both connections are up, and an error text (or null).
"""

import ssl

import client_scripts
from client_scripts import finish_when, reply_text, run_ioloop, topic_stats, wait_then, when_connected

BODIES = [f"msg-{i}" for i in range(6)]


def tls_options(options):
    tls = options.get("tls") or {}
    opts = {"ca_certs": tls.get("ca"), "cert_reqs": ssl.CERT_REQUIRED}
    if tls.get("cert"):
        opts["certfile"] = tls["cert"]
        opts["keyfile"] = tls["key"]
    return opts


def client_kwargs(options):
    kwargs = {key: options[key] for key in ("tls_v1", "snappy", "deflate", "deflate_level")
              if key in options}
    if options.get("tls_v1"):
        kwargs["tls_options"] = tls_options(options)
    return kwargs


def run_pynsq(cfg, out, deadline):
    import nsq
    import tornado.ioloop

    loop = tornado.ioloop.IOLoop.current()
    kwargs = client_kwargs(cfg["options"])

    class Reader(nsq.Reader):
        def _on_connection_identify_response(self, conn, data, **kw):
            out["identify"].append(data)
            return super()._on_connection_identify_response(conn, data, **kw)

    def finish():
        out["stats"] = topic_stats(cfg)
        loop.stop()

    check = finish_when(loop, lambda: (len(out["received"]) >= len(BODIES)
                                       and len(out["publish_results"]) >= 4), finish)

    def handler(message):
        out["received"].append(message.body.decode())
        check()
        return True

    reader = Reader(topic=cfg["topic"], channel="ch", message_handler=handler,
                    nsqd_tcp_addresses=[cfg["tcp"]], max_in_flight=10, **kwargs)
    writer = nsq.Writer([cfg["tcp"]], **kwargs)

    def on_response(conn, data):
        out["publish_results"].append(reply_text(data))
        check()

    def publish():
        for body in BODIES[:3]:
            writer.pub(cfg["topic"], body.encode(), callback=on_response)
        writer.mpub(cfg["topic"], [b.encode() for b in BODIES[3:]], callback=on_response)

    when_connected(loop, writer, publish)
    run_ioloop(loop, deadline, out)
    reader.close()


def run_gnsq(cfg, out, deadline):
    import gevent.event
    import gnsq
    import gnsq.consumer

    kwargs = client_kwargs(cfg["options"])
    done = gevent.event.Event()

    class Conn(gnsq.NsqdTCPClient):
        def identify(self):
            data = super().identify()
            out["identify"].append(data)
            return data

    gnsq.consumer.NsqdTCPClient = Conn

    def handler(consumer, message):
        out["received"].append(message.body.decode())
        if len(out["received"]) >= len(BODIES):
            done.set()

    consumer = gnsq.Consumer(cfg["topic"], "ch", [cfg["tcp"]], message_handler=handler,
                             max_in_flight=10, **kwargs)
    consumer.start(block=False)
    # gnsq 1.0.2's Producer cannot upgrade: its response handler sees the upgrade's OK
    # before it registered the connection (KeyError). Publish on a bare connection.
    host, port = cfg["tcp"].rsplit(":", 1)
    producer = gnsq.NsqdTCPClient(host, int(port), **kwargs)
    producer.connect()
    producer.identify()

    def answer():
        frame, data = producer.read_response()
        return reply_text(data)

    for body in BODIES[:3]:
        producer.publish(cfg["topic"], body.encode())
        out["publish_results"].append(answer())
    producer.multipublish(cfg["topic"], [b.encode() for b in BODIES[3:]])
    out["publish_results"].append(answer())
    wait_then(done, deadline, out, lambda: topic_stats(cfg))
    consumer.close()
    producer.close()


def main():
    client_scripts.main({"pynsq": run_pynsq, "gnsq": run_gnsq}, lambda cfg: (
        {"received": [], "publish_results": [], "identify": [], "stats": None, "error": None},
        ()))


if __name__ == "__main__":
    main()
