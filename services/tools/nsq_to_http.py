"""``nsq_to_http``: deliver a topic's messages as HTTP requests.

As NSQ's nsq_to_http: each message is POSTed (body = message) to a ``--post`` address,
or sent as a GET to a ``--get`` address whose ``%s`` is replaced by the URL-escaped
body. With several addresses, ``--mode`` picks one per message (``hostpool``,
``round-robin``, ``epsilon-greedy``, see :mod:`.destinations`); any other mode sends
every message to every address in turn, as Go's tool does. A POST succeeds on any 2xx
answer, a GET on 200 only; a failure, a refused connection or a timeout requeues the
message (go-nsq's delay, growing with its attempts) and makes the consumer back off.
``--n`` requests run at once over keep-alive connections; ``--status-every`` logs
timing summaries.

HTTP goes through geventhttpclient's connection pools (one per origin).
``--http-client-request-timeout`` bounds each socket operation of a request (connect
has its own timeout), where Go bounds the request as a whole: a server that trickles
its answer byte by byte can take longer.
"""

import logging
import random
import time
import urllib.parse

from geventhttpclient import HTTPClient

from greensq.services.shared.goflags import Flag
from greensq.services.shared.version import NSQ_VERSION

from . import options, runner
from .client_config import GoNsqConfig, consumer_opt_flag, make_consumer
from .destinations import Destinations
from .timer_metrics import TimerMetrics

PROGRAM = "nsq_to_http"
log = logging.getLogger("greensq.tools")

DEFAULT_CONTENT_TYPE = "application/octet-stream"
PICKING_MODES = ("round-robin", "hostpool", "epsilon-greedy")

FLAGS = [
    options.version_flag(),
    Flag("topic", "str", "", "nsq topic"),
    options.channel_flag("nsq_to_http"),
    options.max_in_flight_flag(),
    Flag("n", "int", 100, "number of concurrent publishers"),
    Flag("mode", "str", "hostpool", "the upstream request mode options: round-robin, "
         "hostpool (default), epsilon-greedy"),
    Flag("sample", "float", 1.0, "% of messages to publish (float b/w 0 -> 1)"),
    *options.http_timeout_flags(request_timeout=20.0),
    Flag("status-every", "int", 250, "the # of requests between logging status (per "
         "handler), 0 disables"),
    Flag("content-type", "str", DEFAULT_CONTENT_TYPE, "the Content-Type used for POST requests"),
    Flag("post", "strlist", [], "HTTP address to make a POST request to.  data will be in "
         "the body (may be given multiple times)"),
    Flag("header", "strlist", [], "Custom header for HTTP requests (may be given multiple "
         "times)"),
    Flag("get", "strlist", [], "HTTP address to make a GET request to. '%s' will be printf "
         "replaced with data (may be given multiple times)"),
    options.nsqd_tcp_addresses_flag(),
    options.lookupd_http_addresses_flag(),
    consumer_opt_flag(),
]


def parse_headers(values):
    """``Key: value`` strings as a dict, or None if one is malformed."""
    headers = {}
    for value in values:
        key, colon, text = value.partition(":")
        key, text = key.strip(), text.strip()
        if not colon or not key or not text:
            return None
        headers[key] = text
    return headers


def check(opts):
    """NSQ's start-up checks, in NSQ's order and words; returns the custom headers."""
    headers = parse_headers(opts.header)
    if headers is None:
        raise options.ToolError("--header value format should be 'key=value'")
    if not opts.topic or not opts.channel:
        raise options.ToolError("--topic and --channel are required")
    if opts.content_type != DEFAULT_CONTENT_TYPE:
        if not opts.post:
            raise options.ToolError("--content-type only used with --post")
        if not opts.content_type:
            raise options.ToolError("--content-type requires a value when used")
    options.check_sources(opts)
    if not opts.get and not opts.post:
        raise options.ToolError("--get or --post required")
    if opts.get and opts.post:
        raise options.ToolError("use --get or --post not both")
    if any(address.count("%s") != 1 for address in opts.get):
        raise options.ToolError("invalid GET address - must be a printf string")
    if not 0.0 <= opts.sample <= 1.0:
        raise options.ToolError("ERROR: --sample must be between 0.0 and 1.0")
    options.check_positive(opts, "n", "http-client-connect-timeout",
                           "http-client-request-timeout")
    return headers


class RequestFailed(Exception):
    pass


class NsqToHttp(runner.Tool):
    def __init__(self, opts):
        super().__init__()
        custom_headers = check(opts)
        self.opts = opts
        self.method = "POST" if opts.post else "GET"
        self.addresses = opts.post or opts.get
        self.headers = {"User-Agent": f"{PROGRAM} v{NSQ_VERSION}"}
        if self.method == "POST":
            self.headers["Content-Type"] = opts.content_type
        self.headers.update(custom_headers)
        self.destinations = None
        if opts.mode in PICKING_MODES:
            self.destinations = Destinations(self.addresses, opts.mode)
        else:
            log.info("mode %s: every message goes to every address", opts.mode)
        every = opts.status_every if len(self.addresses) > 1 else 0
        self.address_metrics = {a: TimerMetrics(every, f"[{a}]:") for a in self.addresses}
        self.metrics = TimerMetrics(opts.status_every, "[aggregate]:")
        self.pools = {}
        self.consumer = make_consumer(PROGRAM, opts, opts.topic, self.handle,
                                      GoNsqConfig(opts.consumer_opt), concurrency=opts.n)

    def start(self):
        self.consumer.start()

    def stop(self):
        self.consumer.close(timeout=self.opts.http_client_request_timeout + 5)
        for pool in self.pools.values():
            pool.close()

    def handle(self, message):
        if self.opts.sample < 1.0 and random.random() > self.opts.sample:
            return
        started = time.monotonic()
        try:
            if self.destinations is None:
                for address in self.addresses:
                    sent = time.monotonic()
                    self.send(address, message.body)
                    self.address_metrics[address].status(sent)
            else:
                address = self.destinations.pick()
                try:
                    self.send(address, message.body)
                except RequestFailed:
                    self.destinations.mark(address, ok=False)
                    raise
                self.destinations.mark(address, ok=True, seconds=time.monotonic() - started)
                self.address_metrics[address].status(started)
        except RequestFailed as exc:
            log.error("Handler returned error (%s) for msg %s", exc, message.id.decode())
            message.requeue()
            return
        self.metrics.status(started)

    def send(self, address, body):
        """One request for ``body`` to ``address``; raises RequestFailed."""
        url = address.replace("%s", urllib.parse.quote_plus(body), 1) \
            if self.method == "GET" else address
        parts = urllib.parse.urlsplit(url)
        uri = parts.path or "/"
        if parts.query:
            uri += "?" + parts.query
        try:
            pool = self._pool(parts)
            response = pool.request(self.method, uri,
                                    body=body if self.method == "POST" else None,
                                    headers=self.headers)
            response.read()
            response.release()
        except Exception as exc:   # refused, reset, timed out, bad answer: all requeue
            raise RequestFailed(f"{self.method} {url}: {exc or type(exc).__name__}") from None
        status = response.status_code
        ok = status == 200 if self.method == "GET" else 200 <= status < 300
        if not ok:
            raise RequestFailed(f"got status code {status}")

    def _pool(self, parts):
        origin = (parts.scheme, parts.hostname, parts.port)
        pool = self.pools.get(origin)
        if pool is None:
            pool = HTTPClient(parts.hostname, parts.port, ssl=parts.scheme == "https",
                              concurrency=self.opts.n,
                              connection_timeout=self.opts.http_client_connect_timeout,
                              network_timeout=self.opts.http_client_request_timeout)
            self.pools[origin] = pool
        return pool


def main(argv=None):
    opts = options.parse(PROGRAM, FLAGS, argv)
    runner.run(lambda: NsqToHttp(opts))


if __name__ == "__main__":
    main()
