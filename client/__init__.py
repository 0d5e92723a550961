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

Modules: :mod:`.errors` (one exception per NSQ error code), :mod:`.message`,
:mod:`.connection` (one nsqd connection), :mod:`.producer`, :mod:`.consumer`,
:mod:`.http` (nsqd and nsqlookupd HTTP APIs).
"""

from .connection import USER_AGENT, Connection
from .consumer import Consumer
from .errors import *  # noqa: F401,F403 - the typed errors are part of the API
from .errors import ERRORS, NSQError, ProtocolError, error_from_frame
from .http import HTTPError, LookupdHTTPClient, NsqdHTTPClient
from .message import Message
from .producer import Producer

__all__ = [
    "Connection", "Consumer", "ERRORS", "HTTPError", "LookupdHTTPClient", "Message",
    "NSQError", "NsqdHTTPClient", "Producer", "ProtocolError", "USER_AGENT",
    "error_from_frame",
] + [cls.__name__ for cls in ERRORS.values()]
