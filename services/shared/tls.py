"""nsqd's TLS settings from its flags: the server context (versions, ciphers, client
certificates) and NSQ's ``--tls-required`` modes. Standard library only: the arbiter checks
the flags with it before it forks."""

import ssl

TLS_VERSIONS = {
    "ssl3.0": ssl.TLSVersion.TLSv1,     # OpenSSL no longer speaks SSLv3: the lowest it has
    "tls1.0": ssl.TLSVersion.TLSv1,
    "tls1.1": ssl.TLSVersion.TLSv1_1,
    "tls1.2": ssl.TLSVersion.TLSv1_2,
    "tls1.3": ssl.TLSVersion.TLSv1_3,
}

# With --tls-min-version below tls1.2 (nsqd's default is tls1.0, as Go's): Python's
# default cipher list with the SHA-1 suites, the only ones TLS 1.0 and 1.1 have (Go offers
# ECDHE with AES-CBC-SHA to them), at OpenSSL's security level 0, since from OpenSSL 3 on
# level 1 and above refuse the MD5-SHA1 / SHA-1 signatures these versions sign with. From
# tls1.2 up the context keeps Python's defaults.
LEGACY_TLS_CIPHERS = ("ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!AESCCM"
                      ":@SECLEVEL=0")


def server_context(opts, context_class=ssl.SSLContext):
    """nsqd's TLS context from its flags, or None without ``--tls-cert``. The worker asks
    for gevent's ``SSLContext`` (cooperative sockets); the arbiter checks the flags with
    the standard library's before it forks."""
    if not (opts.tls_cert and opts.tls_key):
        return None
    context = context_class(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(opts.tls_cert, opts.tls_key)
    minimum = TLS_VERSIONS.get((opts.tls_min_version or "").lower())
    if minimum is not None:
        context.minimum_version = minimum
        if minimum < ssl.TLSVersion.TLSv1_2:
            context.set_ciphers(LEGACY_TLS_CIPHERS)
    policy = opts.tls_client_auth_policy
    if opts.tls_root_ca_file:
        context.load_verify_locations(cafile=opts.tls_root_ca_file)
    if policy in ("require", "require-verify"):
        # Python's ssl cannot ask for a client certificate without verifying it, so
        # "require" verifies against --tls-root-ca-file too (or the system CAs).
        context.verify_mode = ssl.CERT_REQUIRED
        if not opts.tls_root_ca_file:
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return context


def tls_required_mode(opts):
    """"false", "tcp-https" or "true": NSQ forces "true" once a client-auth policy is set."""
    mode = (opts.tls_required or "false").lower()
    if mode in ("1", "t", "true"):
        mode = "true"
    elif mode in ("0", "f", "false"):
        mode = "false"
    if opts.tls_client_auth_policy and mode == "false":
        mode = "true"
    return mode
