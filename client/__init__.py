"""greensq.client: a gevent-native NSQ client (Producer, Consumer, HTTP clients).

It runs on gevent's hub with gevent's own sockets, so it needs no monkey-patching and
works in any gevent program (Gunicorn gevent workers included)::

    from greensq.client import Producer, Consumer

    producer = Producer(["127.0.0.1:4150"])
    producer.publish("events", b"hello")

    def handler(message):          # return: FIN; raise: REQ with a growing delay
        print(message.body)

    consumer = Consumer("events", "archive", handler,
                        lookupd_http_addresses=["127.0.0.1:4161"], max_in_flight=100)
    consumer.start()
    consumer.join()

See ``client/README.md`` for the classic NSQ patterns (metrics through a local nsqd,
workers, pub/sub, archiving) as runnable examples.

Modules: the protocol without I/O, shared with the asyncio client :mod:`.aio`:
:mod:`.protocol` (handshake, commands, answers; its frame decoder and compression
codecs are nsqd's, in ``greensq.services.shared.frames`` and ``.compression``),
:mod:`.producer_core` and :mod:`.consumer_core` (failover, RDY, backoff),
:mod:`.errors` (one exception per NSQ error code), :mod:`.message`; on gevent:
:mod:`.connection` (one nsqd connection), :mod:`.producer`, :mod:`.consumer`,
:mod:`.http` (nsqd and nsqlookupd HTTP APIs).
"""

from greensq.services.shared.deferred import deferred_import

from .errors import *  # noqa: F401,F403 - the typed errors are part of the API
from .errors import ERRORS, NSQError, ProtocolError, error_from_frame
from .http_answers import HTTPError
from .message import Message
from .protocol import USER_AGENT

# The gevent client's modules, loaded when one of their classes is first asked for: an
# asyncio program using greensq.client.aio, which shares this package, never loads gevent.
_connection = deferred_import("greensq.client.connection")
_consumer = deferred_import("greensq.client.consumer")
_http = deferred_import("greensq.client.http")
_producer = deferred_import("greensq.client.producer")
_ON_GEVENT = {"Connection": _connection, "Consumer": _consumer, "Producer": _producer,
              "LookupdHTTPClient": _http, "NsqdHTTPClient": _http}

__all__ = [
    "Connection", "Consumer", "ERRORS", "HTTPError", "LookupdHTTPClient", "Message",
    "NSQError", "NsqdHTTPClient", "Producer", "ProtocolError", "USER_AGENT",
    "error_from_frame",
] + [cls.__name__ for cls in ERRORS.values()]


def __getattr__(name):
    """``Producer``, ``Consumer``, ... of the gevent client, imported on first use."""
    module = _ON_GEVENT.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value
