"""``gunicorn -w 4 -k gevent 'greensq.http.gateway_app:app'``: nsqd's HTTP API in front of
any nsqd, Go's included, serving ``/pub`` and ``/mpub`` from several processes and
publishing over the nsqd's TCP port (gateway.py); every other request goes to the
nsqd's HTTP API. Options come from ``GREENSQ_GATEWAY_OPTS``::

    GREENSQ_GATEWAY_OPTS="--nsqd-tcp-address=127.0.0.1:4150 --nsqd-http-address=127.0.0.1:4151" \\
        gunicorn -w 4 -k gevent -b 0.0.0.0:8151 'greensq.http.gateway_app:app'

The gateway answers as the nsqd does, with the nsqd's limits (``--max-msg-size``,
``--max-body-size``, ``--max-req-timeout``): given as options, or asked from the nsqd's
``GET /config/<option>`` (nsq 1.x answers it) when first needed. ``--producer-opt``
takes go-nsq's options for the TCP connection, as ``to_nsq`` does (``tls_v1``,
``auth_secret`` for an nsqd that requires AUTH, ``snappy`` ...).
"""

import http.client
import logging
import os
import shlex

import ujson

from greensq.client.http import request
from greensq.http.gateway import Gateway
from greensq.http.nsq_http import NsqHTTPError, lazy_app
from greensq.services.shared.goflags import Flag, FlagSet, parse_or_exit
from greensq.services.tools.client_config import GoNsqConfig, producer_opt_flag

log = logging.getLogger("greensq")

PROGRAM = "greensq-gateway"
OPTIONS_VARIABLE = "GREENSQ_GATEWAY_OPTS"
LIMITS = ("max_msg_size", "max_body_size", "max_req_timeout")
NS = 1_000_000_000

GATEWAY_FLAGSET = FlagSet(PROGRAM, [
    Flag("nsqd-tcp-address", "str", "", "<addr>:<port> (or a Unix socket's path) of the "
         "nsqd's TCP protocol, where messages are published"),
    Flag("nsqd-http-address", "str", "", "<addr>:<port> (or a Unix socket's path) of the "
         "nsqd's HTTP API, where every other request goes"),
    Flag("max-msg-size", "int", 0, "the nsqd's --max-msg-size (0: ask the nsqd)"),
    Flag("max-body-size", "int", 0, "the nsqd's --max-body-size (0: ask the nsqd)"),
    Flag("max-req-timeout", "duration", 0.0, "the nsqd's --max-req-timeout (0: ask the "
         "nsqd)"),
    producer_opt_flag(),
])


class UpstreamLimits:
    """The nsqd's limits: as given, or as its ``GET /config/<option>`` says, asked when
    first read (again after a failure, which is answered 502 ``BAD_GATEWAY``)."""

    def __init__(self, http_address, given):
        self.http_address = http_address
        for name, value in given.items():
            if value:
                setattr(self, name, value)

    def __getattr__(self, name):
        if name not in LIMITS:
            raise AttributeError(name)
        try:
            status, body = request(self.http_address, "GET", f"/config/{name}")
            value = ujson.loads(body) if status == 200 else None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            log.error("the nsqd's %s is unknown - %s", name, exc)
            value = None
        if not isinstance(value, int) or value <= 0:
            raise NsqHTTPError(502, "BAD_GATEWAY")
        value = value / NS if name == "max_req_timeout" else value
        setattr(self, name, value)
        return value


def parse_gateway_options(argv):
    opts = GATEWAY_FLAGSET.parse(argv)
    for name in ("nsqd_tcp_address", "nsqd_http_address"):
        if not getattr(opts, name):
            raise GATEWAY_FLAGSET.fail(f"--{name.replace('_', '-')} is required")
    return opts


def build_gateway(environ=os.environ):
    """The gateway app for the options in ``GREENSQ_GATEWAY_OPTS``."""
    opts = parse_or_exit(parse_gateway_options, shlex.split(environ.get(OPTIONS_VARIABLE, "")),
                         PROGRAM)
    logging.basicConfig(level=logging.INFO, format=f"[{PROGRAM}] %(levelname)s: %(message)s")
    limits = UpstreamLimits(opts.nsqd_http_address,
                            {name: getattr(opts, name) for name in LIMITS})
    producer_options = GoNsqConfig(opts.producer_opt, "producer-opt").producer_kwargs()
    gateway = Gateway(opts.nsqd_tcp_address, opts.nsqd_http_address, limits,
                      **producer_options)
    log.info("publishing to nsqd at %s, passing the rest to %s", opts.nsqd_tcp_address,
             opts.nsqd_http_address)
    return gateway


__getattr__ = lazy_app(globals(), build_gateway)
