"""nsqd's options: NSQ 1.3's flag names, defaults and config-file keys.

Flags that greensq accepts but does not act on (the queue-scan tuning knobs that its actor
design makes unnecessary) are kept so that existing command lines and config files keep
working. A few flags are greensq's own (dead letters, bounded disk queues, replication):
see README.
"""

import hashlib
import socket
import zlib

from greensq.actors.dead_letters import valid_suffix
from greensq.services.shared.daemon_flags import daemon_flags
from greensq.services.shared.goflags import Flag, FlagSet, InvalidOptions
from greensq.services.shared.govalues import format_float, quote
from greensq.services.shared.message import MAX_ATTEMPTS_LIMIT

KIB = 1024
MIB = 1024 * 1024

TLS_REQUIRED = ("true", "false", "tcp-https")
TLS_CLIENT_AUTH_POLICIES = ("", "require", "require-verify")
MAX_BYTES_POLICIES = ("refuse", "drop-oldest")
TLS_VERSIONS = ("ssl3.0", "tls1.0", "tls1.1", "tls1.2", "tls1.3")
MAX_HTTP_WORKERS = 64
MAX_IDLE_SPIN = 0.01     # seconds: longer spins burn CPU for no gain in latency


def default_node_id(hostname=None):
    """NSQ's default node ID: a stable hash of the hostname, modulo 1024."""
    digest = hashlib.md5((hostname or socket.gethostname()).encode()).digest()
    return zlib.crc32(digest) % 1024


NSQD_FLAGS = [
    *daemon_flags("nsqd"),
    Flag("node-id", "int", default_node_id(), "unique part for message IDs, (int) in range "
         "[0,1024)", config_key="id"),
    Flag("worker-id", "int", None, "[deprecated] use --node-id", deprecated=True,
         alias_of="node-id"),
    Flag("https-address", "str", "0.0.0.0:4152", "<addr>:<port> to listen on for HTTPS clients"),
    Flag("http-address", "str", "0.0.0.0:4151", "<addr>:<port> to listen on for HTTP clients"),
    Flag("tcp-address", "str", "0.0.0.0:4150", "<addr>:<port> to listen on for TCP clients"),
    Flag("http-workers", "int", 0, "(greensq) processes serving the HTTP port beside the one "
         "that holds the topics and channels, publishing to it over TCP (0: it serves HTTP "
         "itself)"),
    Flag("idle-spin", "duration", 50e-6, "(greensq) how long each process keeps polling the "
         "network after its last work before it sleeps: a request arriving meanwhile is "
         "served without a wake-up (0: sleep at once)"),
    Flag("broadcast-address", "str", socket.gethostname(), "address that will be registered "
         "with lookupd (defaults to the OS hostname)"),
    Flag("broadcast-tcp-port", "int", 0, "TCP port that will be registered with lookupd "
         "(defaults to the TCP port that this nsqd is listening on)"),
    Flag("broadcast-http-port", "int", 0, "HTTP port that will be registered with lookupd "
         "(defaults to the HTTP port that this nsqd is listening on)"),
    Flag("lookupd-tcp-address", "strlist", [], "lookupd TCP address (may be given multiple times)",
         config_key="nsqlookupd_tcp_addresses"),
    Flag("topology-region", "str", "", "A region represents a larger geographic area"),
    Flag("topology-zone", "str", "", "A zone represents a logical failure domain"),
    Flag("enable-experiment", "strlist", [], "enable experimental feature (may be given multiple "
         "times): topology-aware-consumption"),
    Flag("http-client-connect-timeout", "duration", 2.0, "timeout for HTTP connect"),
    Flag("http-client-request-timeout", "duration", 5.0, "timeout for HTTP request"),
    # diskqueue
    Flag("data-path", "str", "", "path to store disk-backed messages"),
    Flag("mem-queue-size", "int", 10000,
         "number of messages to keep in memory (per topic/channel)"),
    Flag("max-bytes-per-file", "int", 100 * MIB, "number of bytes per diskqueue file before rolling"),
    Flag("sync-every", "int", 2500, "number of messages per diskqueue fsync"),
    Flag("sync-timeout", "duration", 2.0, "duration of time per diskqueue fsync"),
    Flag("durable", "bool", False, "(greensq) answer a publish only once it is fsynced, and keep "
         "every message on disk until it is FINished, in flight and deferred ones included"),
    Flag("queue-scan-worker-pool-max", "int", 4, "max concurrency for checking in-flight and "
         "deferred message timeouts"),
    Flag("queue-scan-selection-count", "int", 20, "number of channels to check per cycle"),
    Flag("queue-scan-interval", "duration", 0.1, "interval between in-flight scans"),
    Flag("queue-scan-refresh-interval", "duration", 5.0, "refresh interval of the channel list"),
    Flag("queue-scan-dirty-percent", "float", 0.25, "requeue threshold of a scan cycle"),
    # msg and command options
    Flag("msg-timeout", "duration", 60.0, "default duration to wait before auto-requeing a message"),
    Flag("max-msg-timeout", "duration", 15 * 60.0, "maximum duration before a message will timeout"),
    Flag("max-msg-size", "int", MIB, "maximum size of a single message in bytes",
         config_key="max_msg_size"),
    Flag("max-message-size", "int", None, "[deprecated] use --max-msg-size", deprecated=True,
         alias_of="max-msg-size"),
    Flag("max-req-timeout", "duration", 3600.0, "maximum requeuing timeout for a message"),
    Flag("max-body-size", "int", 5 * MIB, "maximum size of a single command body"),
    # client overridable configuration options
    Flag("max-heartbeat-interval", "duration", 60.0,
         "maximum client configurable duration of time between client heartbeats"),
    Flag("max-rdy-count", "int", 2500, "maximum RDY count for a client"),
    Flag("max-output-buffer-size", "int", 64 * KIB,
         "maximum client configurable size (in bytes) for a client output buffer"),
    Flag("max-output-buffer-timeout", "duration", 30.0,
         "maximum client configurable duration of time between flushing to a client"),
    Flag("min-output-buffer-timeout", "duration", 0.025,
         "minimum client configurable duration of time between flushing to a client"),
    Flag("output-buffer-timeout", "duration", 0.25,
         "default duration of time between flushing data to clients"),
    Flag("max-channel-consumers", "int", 0,
         "maximum channel consumer connection count per nsqd instance (0 = unlimited)"),
    # statsd integration
    Flag("statsd-address", "str", "", "UDP <addr>:<port> of a statsd daemon for pushing stats"),
    Flag("statsd-interval", "duration", 60.0, "duration between pushing to statsd"),
    Flag("statsd-mem-stats", "bool", True, "toggle sending memory and GC stats to statsd"),
    Flag("statsd-prefix", "str", "nsq.%s", "prefix used for keys sent to statsd"),
    Flag("statsd-udp-packet-size", "int", 508, "the size in bytes of statsd UDP packets"),
    Flag("statsd-exclude-ephemeral", "bool", False, "skip ephemeral topics and channels"),
    # end to end message latency
    Flag("e2e-processing-latency-window-time", "duration", 600.0,
         "calculate end to end latency quantiles for this duration of time"),
    Flag("e2e-processing-latency-percentile", "floatlist", [],
         "message processing time percentiles (as float (0, 1.0]) to track",
         config_key="e2e_processing_latency_percentiles"),
    # greensq: server-side dead letters and bounded queues (not in NSQ)
    Flag("max-attempts", "int", 0, "deliveries after which a message goes to its topic's "
         "dead-letter topic instead (0 = never, as NSQ; settable per channel over HTTP)"),
    Flag("dead-letter-topic-suffix", "str", ".dead", "dead letters of topic T go to topic "
         "T<suffix>"),
    Flag("max-bytes-per-topic", "int", 0, "most bytes a topic's disk queue may hold "
         "(0 = unbounded)"),
    Flag("max-bytes-per-channel", "int", 0, "most bytes a channel's disk queue may hold "
         "(0 = unbounded)"),
    Flag("max-bytes-policy", "str", "refuse", "when a disk queue is full: 'refuse' "
         "publishes, or 'drop-oldest' messages", choices=MAX_BYTES_POLICIES),
    # greensq: replication (not in NSQ)
    Flag("replica-tcp-address", "strlist", [], "<addr>:<port> of an nsqd that keeps a copy of "
         "this nsqd's unfinished messages and takes them over if it dies (may be given "
         "multiple times)", config_key="replica_tcp_addresses"),
    Flag("replica-failover-timeout", "duration", 5.0, "silence after which a replica takes "
         "over this nsqd's messages"),
    # TLS config
    Flag("tls-cert", "str", "", "path to certificate file"),
    Flag("tls-key", "str", "", "path to key file"),
    Flag("tls-client-auth-policy", "str", "", "client certificate auth policy "
         "('require' or 'require-verify')", choices=TLS_CLIENT_AUTH_POLICIES),
    Flag("tls-root-ca-file", "str", "", "path to certificate authority file"),
    Flag("tls-required", "str", "false", "require TLS for client connections "
         "(true, false, tcp-https)", choices=TLS_REQUIRED, bare="true",
         choice_error=lambda text: f"strconv.ParseBool: parsing {quote(text.lower())}: "
                                   "invalid syntax"),
    Flag("tls-min-version", "str", "tls1.0", "minimum SSL/TLS version acceptable "
         "('ssl3.0', 'tls1.0', 'tls1.1', 'tls1.2' or 'tls1.3')", choices=TLS_VERSIONS,
         choice_error=lambda text: f"unknown tlsVersionOption {quote(text.lower())}",
         go_type="value", go_default="tls1.0"),
    # compression
    Flag("deflate", "bool", True, "enable deflate feature negotiation (client compression)",
         go_field="DeflateEnabled"),
    Flag("max-deflate-level", "int", 6, "max deflate compression level a client can negotiate "
         "(> values == > nsqd CPU usage)"),
    Flag("snappy", "bool", True, "enable snappy feature negotiation (client compression)",
         go_field="SnappyEnabled"),
    # auth
    Flag("auth-http-address", "strlist", [], "<addr>:<port> or a full url to query auth server "
         "(may be given multiple times)", config_key="auth_http_addresses"),
    Flag("auth-http-request-method", "str", "get", "HTTP method to use for auth server requests"),
]

NSQD_FLAGSET = FlagSet("nsqd", NSQD_FLAGS)


def parse_nsqd_options(argv):
    """Parse an nsqd command line into Options, filling derived defaults and validating
    (InvalidOptions, with NSQ's message and in its order, for options nsqd refuses)."""
    opts = NSQD_FLAGSET.parse(argv)
    if opts.version:
        return opts
    hostname = socket.gethostname()
    if not opts.broadcast_address:
        opts.broadcast_address = hostname
    opts.log_level = opts.log_level.lower()
    opts.tls_required = opts.tls_required.lower()
    opts.hostname = hostname
    opts.max_bytes_policy = opts.max_bytes_policy.lower()
    if not 1 <= opts.max_deflate_level <= 9:
        raise InvalidOptions("--max-deflate-level must be [1,9]")
    if not 0 <= opts.node_id < 1024:
        raise InvalidOptions("--node-id must be [0,1024)")
    for value in opts.e2e_processing_latency_percentile:
        if not 0 < value <= 1:
            raise InvalidOptions(
                f"invalid E2E processing latency percentile: {format_float(value)}")
    if not 0 <= opts.http_workers <= MAX_HTTP_WORKERS:
        raise InvalidOptions(f"--http-workers must be in range [0, {MAX_HTTP_WORKERS}]")
    if not 0 <= opts.max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise InvalidOptions(f"--max-attempts must be in range [0, {MAX_ATTEMPTS_LIMIT}]")
    if not valid_suffix(opts.dead_letter_topic_suffix):
        raise InvalidOptions("--dead-letter-topic-suffix must be 1 to 32 of the characters "
                             "[.a-zA-Z0-9_-]")
    if not 0 <= opts.idle_spin <= MAX_IDLE_SPIN:
        raise InvalidOptions("--idle-spin must be in range [0, 10ms]")
    if opts.replica_failover_timeout < 1:
        raise InvalidOptions("--replica-failover-timeout must be at least 1s")
    for name in ("mem_queue_size", "max_msg_size", "max_body_size", "max_rdy_count",
                 "max_bytes_per_file", "sync_every", "max_output_buffer_size",
                 "max_bytes_per_topic", "max_bytes_per_channel"):
        if getattr(opts, name) < 0:
            raise InvalidOptions(f"--{name.replace('_', '-')} must not be negative")
    return opts
