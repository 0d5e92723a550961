"""nsqadmin's options: NSQ 1.3's flag names, defaults and config-file keys, and the
checks Go's nsqadmin makes before it listens (each failure is one ``FATAL`` line)."""

import ipaddress
import posixpath
import socket
import ssl
from urllib.parse import urlsplit

from greensq.services.shared.daemon_flags import daemon_flags
from greensq.services.shared.goflags import Flag, FlagSet, InvalidOptions

NSQADMIN_FLAGS = [
    *daemon_flags("nsqadmin"),
    Flag("http-address", "str", "0.0.0.0:4171", "<addr>:<port> to listen on for HTTP clients"),
    Flag("base-path", "str", "/", "URL base path"),
    Flag("dev-static-dir", "str", "", "(development use only)"),
    Flag("graphite-url", "str", "", "graphite HTTP address"),
    Flag("proxy-graphite", "bool", False, "proxy HTTP requests to graphite"),
    Flag("statsd-counter-format", "str", "stats.counters.%s.count",
         "The counter stats key formatting applied by the implementation of statsd. "
         "If no formatting is desired, set this to an empty string."),
    Flag("statsd-gauge-format", "str", "stats.gauges.%s",
         "The gauge stats key formatting applied by the implementation of statsd. "
         "If no formatting is desired, set this to an empty string."),
    Flag("statsd-prefix", "str", "nsq.%s", "prefix used for keys sent to statsd "
         "(%s for host replacement, must match nsqd)"),
    Flag("statsd-interval", "duration", 60.0,
         "time interval nsqd is configured to push to statsd (must match nsqd)"),
    Flag("notification-http-endpoint", "str", "", "HTTP endpoint (fully qualified) to which "
         "POST notifications of admin actions will be sent"),
    Flag("http-client-connect-timeout", "duration", 2.0, "timeout for HTTP connect"),
    Flag("http-client-request-timeout", "duration", 5.0, "timeout for HTTP request"),
    Flag("http-client-tls-insecure-skip-verify", "bool", False,
         "configure the HTTP client to skip verification of TLS certificates"),
    Flag("http-client-tls-root-ca-file", "str", "", "path to CA file for the HTTP client"),
    Flag("http-client-tls-cert", "str", "", "path to certificate file for the HTTP client"),
    Flag("http-client-tls-key", "str", "", "path to key file for the HTTP client"),
    Flag("allow-config-from-cidr", "str", "127.0.0.1/8",
         "A CIDR from which to allow HTTP requests to the /config endpoint"),
    Flag("acl-http-header", "str", "X-Forwarded-User",
         "HTTP header to check for authenticated admin users"),
    Flag("lookupd-http-address", "strlist", [], "lookupd HTTP address (may be given multiple "
         "times)", config_key="nsqlookupd_http_addresses"),
    Flag("nsqd-http-address", "strlist", [], "nsqd HTTP address (may be given multiple times)",
         config_key="nsqd_http_addresses"),
    Flag("admin-user", "strlist", [], "admin user (may be given multiple times; if specified, "
         "only these users will be able to perform privileged actions; acl-http-header is used "
         "to determine the authenticated user)", config_key="admin_users"),
]

NSQADMIN_FLAGSET = FlagSet("nsqadmin", NSQADMIN_FLAGS)


def parse_nsqadmin_options(argv):
    """Parse an nsqadmin command line into Options (not yet validated: see ``validate``)."""
    opts = NSQADMIN_FLAGSET.parse(argv)
    opts.log_level = opts.log_level.lower()
    opts.base_path = normalize_base_path(opts.base_path)
    return opts


def normalize_base_path(path):
    """``/`` for nothing, a leading slash, no trailing one, no ``.`` or ``..`` parts."""
    if not path:
        return "/"
    if not path.startswith("/"):
        path = "/" + path
    return posixpath.normpath(path).replace("//", "/")


def _resolve(flag, address):
    host, sep, port = address.rpartition(":")
    try:
        if not sep:
            raise ValueError("missing port in address")
        socket.getaddrinfo(host.strip("[]") or None, int(port), 0, socket.SOCK_STREAM)
    except (ValueError, OSError) as exc:
        raise InvalidOptions(f"failed to resolve --{flag} ({address}) - {exc}") from None


def _open_error(path, exc):
    """An OSError in the words of Go's os package (``open <path>: <reason>``)."""
    return f"open {path}: {(exc.strerror or str(exc)).lower()}"


def _check_client_tls_files(opts):
    """Go's checks of the ``--http-client-tls-*`` files, in its words."""
    cert, key = opts.http_client_tls_cert, opts.http_client_tls_key
    if cert and key:
        try:
            for path, what in ((cert, "certificate"), (key, "key")):
                with open(path, "rb") as fh:
                    if b"-----BEGIN" not in fh.read():
                        raise ValueError(f"tls: failed to find any PEM data in {what} input")
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key)
        except (OSError, ValueError) as exc:
            if isinstance(exc, ssl.SSLError):
                reason = f"tls: {exc.reason or exc}".lower()
            elif isinstance(exc, OSError):
                reason = _open_error(path, exc)
            else:
                reason = str(exc)
            raise InvalidOptions(
                f"failed to LoadX509KeyPair {cert}, {key} - {reason}") from None
    root_ca = opts.http_client_tls_root_ca_file
    if root_ca:
        try:
            with open(root_ca, "rb") as fh:
                pem = fh.read()
        except OSError as exc:
            raise InvalidOptions(f"failed to read TLS root CA file {root_ca} - "
                                 f"{_open_error(root_ca, exc)}") from None
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
                cadata=pem.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError):
            raise InvalidOptions(f"failed to AppendCertsFromPEM {root_ca}") from None


def validate(opts):
    """Go's start-up checks, in its order; raises InvalidOptions."""
    if not opts.nsqd_http_address and not opts.lookupd_http_address:
        raise InvalidOptions("--nsqd-http-address or --lookupd-http-address required")
    if opts.nsqd_http_address and opts.lookupd_http_address:
        raise InvalidOptions("use --nsqd-http-address or --lookupd-http-address not both")
    if opts.http_client_tls_cert and not opts.http_client_tls_key:
        raise InvalidOptions("--http-client-tls-key must be specified with --http-client-tls-cert")
    if opts.http_client_tls_key and not opts.http_client_tls_cert:
        raise InvalidOptions("--http-client-tls-cert must be specified with --http-client-tls-key")
    _check_client_tls_files(opts)
    for address in opts.lookupd_http_address:
        _resolve("lookupd-http-address", address)
    for address in opts.nsqd_http_address:
        _resolve("nsqd-http-address", address)
    if opts.proxy_graphite:
        parts = urlsplit(opts.graphite_url)
        if not parts.scheme or not parts.netloc:
            raise InvalidOptions(f"failed to parse --graphite-url ({opts.graphite_url}) - "
                                 "an absolute http(s) URL is required")
    if opts.allow_config_from_cidr:
        try:
            ipaddress.ip_network(opts.allow_config_from_cidr, strict=False)
        except ValueError as exc:
            raise InvalidOptions(f"failed to parse --allow-config-from-cidr "
                                 f"({opts.allow_config_from_cidr}) - {exc}") from None
