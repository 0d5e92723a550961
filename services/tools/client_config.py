"""The tools' consumers and producers, configured with go-nsq's option names.

NSQ's tools pass ``--consumer-opt`` / ``--producer-opt`` values (``name,value``; a bare
``name`` means true) to go-nsq's ``Config.Set``, so scripts carry go-nsq's option names
and units: ``max_backoff_duration,0s``, ``max_attempts,10``, ``tls_v1,true``. This
module checks them the way go-nsq does (the type, then the option's min and max, with
go-nsq's error text) and turns them into :class:`~greensq.client.Consumer` and
:class:`~greensq.client.Producer` keyword arguments.

Two options mean something slightly different in the client and are converted:
go-nsq's backoff waits ``backoff_multiplier * 2**level``, the client's first wait is
``backoff``, so ``backoff = 2 * backoff_multiplier``; and ``max_backoff_duration,0``
turns backoff off in both. Options with no counterpart in greensq.client (socket read and
write deadlines, ``local_addr``, the lookupd poll timeout, ``low_rdy_timeout``, the
full-jitter strategy, lookupd authorization) are accepted and reported by
:meth:`GoNsqConfig.ignored` so the tool can say they have no effect.
"""

import logging
import ssl
from dataclasses import dataclass

from greensq.client import Consumer, Producer
from greensq.client.connection import parse_address, tls_client_context
from greensq.services.shared.goflags import Flag, FlagError
from greensq.services.shared.govalues import (
    format_duration, parse_bool, parse_duration, parse_float, parse_int, quote)
from greensq.services.shared.names import is_valid_name

from .options import ToolError, user_agent

log = logging.getLogger("greensq.tools")

# go-nsq parses integers in base 10
_PARSERS = {"duration": parse_duration, "int": lambda text: parse_int(text, 10),
            "uint": lambda text: parse_int(text, 10, unsigned=True), "float": parse_float,
            "bool": parse_bool, "str": str}

# Where an option goes: the IDENTIFY/transport options of every connection, or the
# consumer's own; None = accepted, no effect in greensq.client.
CONNECTION, CONSUMER = "connection", "consumer"


@dataclass(frozen=True)
class Option:
    name: str
    kind: str
    target: str | None
    keyword: str | None = None
    min: object = None
    max: object = None

    def convert(self, raw):
        """The option's value from a command-line string (True for a bare name), or a
        ValueError with go-nsq's message."""
        try:
            if raw is True and self.kind != "bool":
                raise ValueError("invalid value type")
            value = True if raw is True else _PARSERS[self.kind](raw)
        except ValueError as exc:
            raise ValueError(f"failed to coerce option {self.name} "
                             f"({'true' if raw is True else raw}) - {exc}") from None
        show = format_duration if self.kind == "duration" else str
        if self.min is not None and value < self.min:
            raise ValueError(f"invalid {self.name} ! {show(value)} < {show(self.min)}")
        if self.max is not None and value > self.max:
            raise ValueError(f"invalid {self.name} ! {show(value)} > {show(self.max)}")
        return value


_MINUTE = 60.0
OPTIONS = {option.name: option for option in (
    Option("dial_timeout", "duration", CONNECTION, "connect_timeout"),
    Option("read_timeout", "duration", None, min=0.1, max=5 * _MINUTE),
    Option("write_timeout", "duration", None, min=0.1, max=5 * _MINUTE),
    Option("local_addr", "str", None),
    Option("lookupd_poll_interval", "duration", CONSUMER, min=0.01, max=5 * _MINUTE),
    Option("lookupd_poll_jitter", "float", CONSUMER, min=0.0, max=1.0),
    Option("lookupd_poll_timeout", "duration", None),
    Option("max_requeue_delay", "duration", CONSUMER, min=0.0, max=60 * _MINUTE),
    Option("default_requeue_delay", "duration", CONSUMER, "requeue_delay",
           min=0.0, max=60 * _MINUTE),
    Option("backoff_strategy", "str", CONSUMER),
    Option("max_backoff_duration", "duration", CONSUMER, "max_backoff",
           min=0.0, max=60 * _MINUTE),
    Option("backoff_multiplier", "duration", CONSUMER, "backoff", min=0.0, max=60 * _MINUTE),
    Option("max_attempts", "uint", CONSUMER, max=65535),
    Option("low_rdy_idle_timeout", "duration", CONSUMER, min=1.0, max=5 * _MINUTE),
    Option("low_rdy_timeout", "duration", None, min=1.0, max=5 * _MINUTE),
    Option("rdy_redistribute_interval", "duration", CONSUMER, min=0.001, max=5.0),
    Option("client_id", "str", CONNECTION),
    Option("hostname", "str", CONNECTION),
    Option("user_agent", "str", CONNECTION),
    Option("heartbeat_interval", "duration", CONNECTION),
    Option("sample_rate", "int", CONNECTION, min=0, max=99),
    Option("tls_v1", "bool", CONNECTION),
    Option("tls_root_ca_file", "str", CONNECTION),
    Option("tls_insecure_skip_verify", "bool", CONNECTION),
    Option("tls_cert", "str", CONNECTION),
    Option("tls_key", "str", CONNECTION),
    Option("tls_min_version", "str", CONNECTION),
    Option("deflate", "bool", CONNECTION),
    Option("deflate_level", "int", CONNECTION, min=1, max=9),
    Option("snappy", "bool", CONNECTION),
    Option("output_buffer_size", "int", CONNECTION),
    Option("output_buffer_timeout", "duration", CONNECTION),
    Option("max_in_flight", "int", CONSUMER, min=0),
    Option("msg_timeout", "duration", CONNECTION, min=0.0),
    Option("auth_secret", "str", CONNECTION),
    Option("skip_lookupd_authorization", "bool", None),
)}

BACKOFF_STRATEGIES = ("exponential", "full_jitter")
TLS_VERSIONS = {"ssl3.0": ssl.TLSVersion.SSLv3, "tls1.0": ssl.TLSVersion.TLSv1,
                "tls1.1": ssl.TLSVersion.TLSv1_1, "tls1.2": ssl.TLSVersion.TLSv1_2}
_TLS_OPTIONS = ("tls_root_ca_file", "tls_insecure_skip_verify", "tls_cert", "tls_key",
                "tls_min_version")

# go-nsq's defaults where they differ from greensq.client's (backoff_multiplier 1s).
GO_NSQ_CONSUMER_DEFAULTS = {"backoff": 2.0}


GO_NSQ_CONFIG_HELP = "(may be given multiple times, http://godoc.org/github.com/nsqio/go-nsq#Config)"


def option_value(pair):
    """``(name, value)`` of one go-nsq option given as ``name,value`` (a bare ``name``
    is true), checked as go-nsq's ``Config.Set`` does; ValueError with its message."""
    name, comma, raw = pair.partition(",")
    name = name.replace("-", "_")
    option = OPTIONS.get(name)
    if option is None:
        raise ValueError(f"invalid option {name}")
    value = option.convert(raw if comma else True)
    if name == "backoff_strategy" and value not in BACKOFF_STRATEGIES:
        raise ValueError(f"invalid backoff strategy '{value}'")
    if name == "tls_min_version" and value not in TLS_VERSIONS:
        raise ValueError(f"ERROR: {value} is not a tls version")
    return name, value


def consumer_opt_flag():
    """``--consumer-opt``: each value is checked as it is parsed, as go-nsq's flag does."""
    return Flag("consumer-opt", "strlist", [],
                f"option to passthrough to nsq.Consumer {GO_NSQ_CONFIG_HELP}",
                check=option_value)


def producer_opt_flag():
    return Flag("producer-opt", "strlist", [],
                f"option to passthrough to nsq.Producer {GO_NSQ_CONFIG_HELP}",
                check=option_value)


class GoNsqConfig:
    """The go-nsq options given with one repeatable flag (``consumer-opt``, ...)."""

    def __init__(self, pairs, flag="consumer-opt"):
        self.flag = flag
        self.values = {}
        for pair in pairs:
            self.set(pair)
        for name in self.ignored():
            log.warning("--%s %s has no effect in greensq", flag, name)

    def set(self, pair):
        try:
            name, value = option_value(pair)
        except ValueError as exc:
            raise FlagError(f"invalid value {quote(pair)} for flag -{self.flag}: {exc}") from None
        self.values[name] = value

    def ignored(self):
        """The options given that greensq.client has no use for."""
        ignored = [n for n in self.values if OPTIONS[n].target is None]
        if self.values.get("backoff_strategy") == "full_jitter":
            ignored.append("backoff_strategy")
        return ignored

    def _keywords(self, targets):
        kwargs = {}
        for name, value in self.values.items():
            option = OPTIONS[name]
            if option.target not in targets or name in _TLS_OPTIONS:
                continue
            if name == "backoff_strategy":
                continue
            if name == "backoff_multiplier":
                value = 2 * value
            if name == "heartbeat_interval" and value < 0:
                value = 0.0
            kwargs[option.keyword or name] = value
        tls_context = self._tls_context()
        if tls_context is not None:
            kwargs["tls_context"] = tls_context
        return kwargs

    def _tls_context(self):
        values = self.values
        if not any(name in values for name in _TLS_OPTIONS):
            return None
        try:
            context = tls_client_context(values.get("tls_root_ca_file"),
                                         not values.get("tls_insecure_skip_verify", False),
                                         values.get("tls_cert"), values.get("tls_key"))
        except (OSError, ssl.SSLError) as exc:
            raise FlagError(f"invalid TLS options for flag -{self.flag}: {exc}") from None
        if "tls_min_version" in values:
            context.minimum_version = TLS_VERSIONS[values["tls_min_version"]]
        return context

    def consumer_kwargs(self):
        """Keyword arguments for :class:`~greensq.client.Consumer`, go-nsq's defaults
        first."""
        return {**GO_NSQ_CONSUMER_DEFAULTS, **self._keywords((CONNECTION, CONSUMER))}

    def producer_kwargs(self):
        """Keyword arguments for :class:`~greensq.client.Producer` (consumer-only
        options are accepted and have no effect there, as in go-nsq)."""
        return self._keywords((CONNECTION,))


def _log_give_up(message):
    log.warning("msg %s attempted %d times, giving up", message.id.decode(), message.attempts)


def _check_addresses(addresses):
    for address in addresses:
        try:
            parse_address(address)
        except ValueError:
            raise ToolError(f"dial tcp: address {address}: missing port in address") from None


def make_consumer(program, opts, topic, handler, config, **extra):
    """A Consumer of ``topic`` on ``opts.channel`` from the tool's nsqd or lookupd
    addresses, with the ``--consumer-opt`` options, ``--max-in-flight`` and the tool's
    user agent (both win over ``--consumer-opt``, as in NSQ's tools). Messages given up
    after ``max_attempts`` are logged, as go-nsq does. A bad topic or channel name is a
    ToolError with go-nsq's words."""
    if not is_valid_name(topic):
        raise ToolError("invalid topic name")
    if not is_valid_name(opts.channel):
        raise ToolError("invalid channel name")
    _check_addresses(opts.nsqd_tcp_address)
    kwargs = config.consumer_kwargs()
    kwargs.update(extra)
    kwargs.update(user_agent=user_agent(program), max_in_flight=opts.max_in_flight)
    return Consumer(topic, opts.channel, handler, nsqd_tcp_addresses=opts.nsqd_tcp_address,
                    lookupd_http_addresses=opts.lookupd_http_address,
                    on_give_up=_log_give_up, **kwargs)


def make_producer(program, address, config):
    """A Producer to one nsqd with the ``--producer-opt`` options."""
    _check_addresses([address])
    return Producer([address], user_agent=user_agent(program), **config.producer_kwargs())
