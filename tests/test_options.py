"""nsqd's flags and config file, parsed the way Go's flag package and NSQ parse them.

Pure unit tests of ``greensq.services.shared.goflags`` and ``greensq.services.nsqd.options``:
no daemon is started.
"""

import hashlib
import socket
import zlib

import pytest

from greensq.services.shared.goflags import FatalError, Flag, FlagError, FlagSet, InvalidOptions
from greensq.services.shared.govalues import format_duration, parse_duration
from greensq.services.nsqd.options import (
    NSQD_FLAGSET, default_node_id, parse_nsqd_options)


def parse(*argv):
    return parse_nsqd_options(list(argv))


# -- spellings ----------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["--mem-queue-size", "42"],
    ["--mem-queue-size=42"],
    ["-mem-queue-size", "42"],
    ["-mem-queue-size=42"],
])
def test_every_go_spelling_of_a_valued_flag(argv):
    assert parse(*argv).mem_queue_size == 42


@pytest.mark.parametrize("argv, expected", [
    (["--snappy=false"], False),
    (["-snappy=false"], False),
    (["-snappy=0"], False),
    (["--snappy=F"], False),
    (["-deflate=false", "-snappy"], True),
    (["--snappy"], True),
    (["-snappy=true"], True),
    (["--snappy=1"], True),
])
def test_boolean_flags_bare_or_with_equals(argv, expected):
    assert parse(*argv).snappy is expected


def test_bare_boolean_false_flag_turns_on():
    assert parse().statsd_exclude_ephemeral is False
    assert parse("--statsd-exclude-ephemeral").statsd_exclude_ephemeral is True


def test_boolean_does_not_consume_the_next_argument():
    # Go: "-snappy false" is -snappy=true followed by the positional argument "false".
    values, _, rest = NSQD_FLAGSET.parse_args(["--snappy", "false", "--mem-queue-size=5"])
    assert values == {"snappy": True}
    assert rest == ["false", "--mem-queue-size=5"]


def test_invalid_boolean_value_is_an_error():
    with pytest.raises(FlagError, match="-snappy"):
        parse("--snappy=maybe")


def test_durations_in_every_spelling():
    assert parse("--msg-timeout", "2s").msg_timeout == 2.0
    assert parse("-msg-timeout=1m30s").msg_timeout == 90.0
    assert parse("--sync-timeout=250ms").sync_timeout == pytest.approx(0.25)


def test_string_flag_value_may_start_with_a_dash():
    # A flag that needs a value takes the next argument verbatim, even "-x".
    assert parse("--log-prefix", "-x-").log_prefix == "-x-"


def test_equals_keeps_the_rest_of_the_value():
    assert parse("--statsd-prefix=a=b").statsd_prefix == "a=b"


# -- where parsing stops ------------------------------------------------------------------

def test_parsing_stops_at_the_first_non_flag_argument():
    values, explicit, rest = NSQD_FLAGSET.parse_args(
        ["--mem-queue-size=5", "positional", "--max-rdy-count=3"])
    assert values == {"mem_queue_size": 5}
    assert explicit == {"mem_queue_size"}
    assert rest == ["positional", "--max-rdy-count=3"]


def test_parsing_stops_at_double_dash():
    values, _, rest = NSQD_FLAGSET.parse_args(["-mem-queue-size", "5", "--", "--max-rdy-count=3"])
    assert values == {"mem_queue_size": 5}
    assert rest == ["--max-rdy-count=3"]


def test_a_lone_dash_is_a_positional_argument():
    _, _, rest = NSQD_FLAGSET.parse_args(["-", "--mem-queue-size=5"])
    assert rest == ["-", "--mem-queue-size=5"]


def test_nsqd_rejects_positional_arguments():
    with pytest.raises(FlagError):
        parse("--mem-queue-size=5", "extra")


# -- repeatable flags ---------------------------------------------------------------------

def test_repeatable_flags_collect_every_value_in_order():
    opts = parse("--lookupd-tcp-address=127.0.0.1:4160", "-lookupd-tcp-address",
                 "127.0.0.1:4161", "--lookupd-tcp-address", "127.0.0.1:4162")
    assert opts.lookupd_tcp_address == ["127.0.0.1:4160", "127.0.0.1:4161", "127.0.0.1:4162"]


def test_repeatable_float_flag():
    opts = parse("--e2e-processing-latency-percentile=0.99",
                 "--e2e-processing-latency-percentile=0.5")
    assert opts.e2e_processing_latency_percentile == [0.99, 0.5]


def test_float_flag_is_comma_separated_and_kept_largest_first_as_in_go():
    opts = parse("--e2e-processing-latency-percentile=0.5,0.99",
                 "--e2e-processing-latency-percentile=1.0")
    assert opts.e2e_processing_latency_percentile == [1.0, 0.99, 0.5]


@pytest.mark.parametrize("value, shown", [("0", "0"), ("1.5", "1.5"), ("-0.1", "-0.1"),
                                          ("0.5,2", "2")])
def test_e2e_percentile_out_of_range(value, shown):
    with pytest.raises(InvalidOptions) as info:
        parse(f"--e2e-processing-latency-percentile={value}")
    assert str(info.value) == f"invalid E2E processing latency percentile: {shown}"


def test_e2e_percentile_that_is_not_a_float_is_fatal():
    with pytest.raises(FatalError) as info:
        parse("--e2e-processing-latency-percentile=0.5,x")
    assert str(info.value) == "Could not parse: x" and not info.value.leveled


def test_repeatable_flag_defaults_are_not_shared_between_parses():
    first = parse()
    first.lookupd_tcp_address.append("mutated:1")
    assert parse().lookupd_tcp_address == []


# -- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("arg", ["--no-such-flag", "-no-such-flag", "--no-such-flag=1"])
def test_unknown_flag_error_text(arg):
    with pytest.raises(FlagError) as info:
        parse(arg)
    assert str(info.value) == "flag provided but not defined: -no-such-flag"


@pytest.mark.parametrize("arg", ["--mem-queue-size", "-data-path"])
def test_missing_argument_error_text(arg):
    with pytest.raises(FlagError) as info:
        parse(arg)
    assert str(info.value) == f"flag needs an argument: -{arg.lstrip('-')}"


@pytest.mark.parametrize("arg", ["---mem-queue-size=1", "-=1", "--=1"])
def test_bad_flag_syntax(arg):
    with pytest.raises(FlagError) as info:
        parse(arg)
    assert str(info.value) == f"bad flag syntax: {arg}"


@pytest.mark.parametrize("arg, message", [
    ("--mem-queue-size=lots", 'invalid value "lots" for flag -mem-queue-size: parse error'),
    ("--mem-queue-size=1.5", 'invalid value "1.5" for flag -mem-queue-size: parse error'),
    ("--max-rdy-count=9223372036854775808",
     'invalid value "9223372036854775808" for flag -max-rdy-count: value out of range'),
    ("--msg-timeout=soon", 'invalid value "soon" for flag -msg-timeout: parse error'),
    ("--msg-timeout=5", 'invalid value "5" for flag -msg-timeout: parse error'),
    ("--queue-scan-dirty-percent=x",
     'invalid value "x" for flag -queue-scan-dirty-percent: parse error'),
    ("--snappy=yes", 'invalid boolean value "yes" for -snappy: parse error'),
    ("--log-level=chatty", 'invalid value "chatty" for flag -log-level: '
                           "invalid log level 'chatty' (debug, info, warn, error, fatal)"),
    ("--tls-min-version=TLS9", 'invalid value "TLS9" for flag -tls-min-version: '
                               'unknown tlsVersionOption "tls9"'),
    ("--tls-required=maybe", 'invalid boolean value "maybe" for -tls-required: '
                             'strconv.ParseBool: parsing "maybe": invalid syntax'),
])
def test_bad_values_get_go_flag_packages_message(arg, message):
    with pytest.raises(FlagError) as info:
        parse(arg)
    assert str(info.value) == message
    assert info.value.usage.startswith("Usage of nsqd:\n")


@pytest.mark.parametrize("text, value", [("0x10", 16), ("010", 8), ("0o17", 15),
                                         ("0b101", 5), ("1_000", 1000), ("-5", -5),
                                         ("+7", 7)])
def test_integers_take_gos_base_prefixes(text, value):
    assert parse(f"--broadcast-tcp-port={text}").broadcast_tcp_port == value


def test_log_level_is_case_insensitive():
    assert parse("--log-level=ERROR").log_level == "error"


def test_node_id_out_of_range():
    for argv in ("--node-id=1024", "--node-id=-1"):
        with pytest.raises(InvalidOptions) as info:
            parse(argv)
        assert str(info.value) == "--node-id must be [0,1024)"
    assert parse("--node-id=1023").node_id == 1023
    assert parse("--node-id=0").node_id == 0


def test_greensq_flags_defaults_and_ranges():
    opts = parse()
    assert (opts.max_attempts, opts.dead_letter_topic_suffix) == (0, ".dead")
    assert (opts.max_bytes_per_topic, opts.max_bytes_per_channel) == (0, 0)
    assert opts.max_bytes_policy == "refuse"
    assert parse("--max-bytes-policy=Drop-Oldest").max_bytes_policy == "drop-oldest"
    assert parse("--max-attempts=65535").max_attempts == 65535
    for argv, message in ((["--max-bytes-policy=drop-newest"], "max-bytes-policy"),
                          (["--max-attempts=65536"], "max-attempts"),
                          (["--max-attempts=-1"], "max-attempts"),
                          (["--max-bytes-per-topic=-1"], "max-bytes-per-topic"),
                          (["--dead-letter-topic-suffix="], "dead-letter-topic-suffix"),
                          (["--dead-letter-topic-suffix=.de ad"], "dead-letter-topic-suffix"),
                          (["--dead-letter-topic-suffix=" + "x" * 33],
                           "dead-letter-topic-suffix")):
        with pytest.raises((FlagError, InvalidOptions), match=message):
            parse(*argv)


def test_idle_spin_is_a_duration_up_to_ten_milliseconds():
    assert parse().idle_spin == pytest.approx(50e-6)
    assert parse("--idle-spin=0").idle_spin == 0
    assert parse("--idle-spin=10ms").idle_spin == pytest.approx(0.01)
    for value in ("-1us", "11ms"):
        with pytest.raises(InvalidOptions, match=r"^--idle-spin must be in range \[0, 10ms\]$"):
            parse(f"--idle-spin={value}")


def test_deflate_level_range():
    with pytest.raises(InvalidOptions, match=r"^--max-deflate-level must be \[1,9\]$"):
        parse("--max-deflate-level=10")
    assert parse("--max-deflate-level=9").max_deflate_level == 9


def test_help_prints_usage_and_exits_zero(capsys):
    with pytest.raises(SystemExit) as info:
        parse("-h")
    assert info.value.code == 0
    err = capsys.readouterr().err
    assert err.startswith("Usage of nsqd:\n")
    assert "-mem-queue-size" in err


@pytest.mark.parametrize("entry", [
    "  -mem-queue-size int\n    \tnumber of messages to keep in memory (per topic/channel) "
    "(default 10000)\n",
    "  -http-address string\n    \t<addr>:<port> to listen on for HTTP clients "
    '(default "0.0.0.0:4151")\n',
    "  -data-path string\n    \tpath to store disk-backed messages\n",
    "  -msg-timeout duration\n    \tdefault duration to wait before auto-requeing a message "
    "(default 1m0s)\n",
    "  -min-output-buffer-timeout duration\n",
    "    \tminimum client configurable duration of time between flushing to a client "
    "(default 25ms)\n",
    "  -queue-scan-dirty-percent float\n    \trequeue threshold of a scan cycle (default 0.25)\n",
    "  -snappy\n    \tenable snappy feature negotiation (client compression) (default true)\n",
    "  -statsd-exclude-ephemeral\n    \tskip ephemeral topics and channels\n",
    "  -log-level value\n    \tset log verbosity: debug, info, warn, error, or fatal "
    "(default INFO)\n",
    "  -lookupd-tcp-address value\n    \tlookupd TCP address (may be given multiple times)\n",
    "  -e2e-processing-latency-percentile value\n",
    "  -tls-required\n    \trequire TLS for client connections (true, false, tcp-https)\n",
    "(default tls1.0)\n",
    f"(default {default_node_id(socket.gethostname())})\n",
    f'(defaults to the OS hostname) (default "{socket.gethostname()}")\n',
])
def test_usage_has_go_layout_type_names_and_defaults(entry):
    assert entry in NSQD_FLAGSET.usage()


def test_usage_names_a_back_quoted_value_and_keeps_one_letter_booleans_on_one_line():
    flags = FlagSet("tool", [Flag("rotate-size", "int", 0, "rotate past `rotate-size` bytes"),
                             Flag("v", "bool", False, "verbose"),
                             Flag("n", "int", 0, "count")])
    assert flags.usage() == ("Usage of tool:\n"
                             "  -n int\n    \tcount\n"
                             "  -rotate-size rotate-size\n    \trotate past rotate-size bytes\n"
                             "  -v\tverbose\n")


# -- deprecated flags ---------------------------------------------------------------------

def test_verbose_is_accepted_and_has_no_effect():
    plain = parse().as_dict()
    verbose = parse("--verbose").as_dict()
    assert verbose == plain
    assert parse("-verbose=false").as_dict() == plain


def test_worker_id_sets_node_id():
    assert parse("--worker-id=77").node_id == 77
    assert parse("-worker-id", "5").node_id == 5


def test_max_message_size_sets_max_msg_size():
    assert parse("--max-message-size=2048").max_msg_size == 2048
    assert not hasattr(parse(), "max_message_size")


# -- Go durations -------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("1h2m3.5s", 3723.5),
    ("250ms", 0.25),
    ("0", 0.0),
    ("0s", 0.0),
    ("1m", 60.0),
    ("1.5h", 5400.0),
    (".5s", 0.5),
    ("1us", 1e-6),
    ("1\u00b5s", 1e-6),
    ("100ns", 1e-7),
    ("2h45m", 9900.0),
    ("-1m", -60.0),
    ("+3s", 3.0),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "abc", "1x", "s", "1h 2m", "+", "-", "h1", "1.2.3s"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value).startswith("time: ")
    assert f'"{text}"' in str(info.value)


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"),
    (60, "1m0s"),
    (0.25, "250ms"),
    (3600, "1h0m0s"),
    (900, "15m0s"),
    (3723.5, "1h2m3.5s"),
    (90, "1m30s"),
    (1.5, "1.5s"),
    (2, "2s"),
    (0.025, "25ms"),
    (1e-6, "1\u00b5s"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_format_then_parse_round_trips():
    for seconds in (0, 0.025, 0.25, 2, 60, 90, 3723.5, 86400):
        assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


# -- config file --------------------------------------------------------------------------

def write_config(tmp_path, text):
    path = tmp_path / "nsqd.toml"
    path.write_text(text)
    return str(path)


def test_config_file_keys_are_flag_names_with_underscores(tmp_path):
    config = write_config(tmp_path, """
mem_queue_size = 123
data_path = "/var/lib/nsqd"
log_level = "warn"
log_prefix = "[cfg] "
snappy = false
max_rdy_count = 7
statsd_prefix = "x.%s"
""")
    opts = parse(f"--config={config}")
    assert opts.mem_queue_size == 123
    assert opts.data_path == "/var/lib/nsqd"
    assert opts.log_level == "warn"
    assert opts.log_prefix == "[cfg] "
    assert opts.snappy is False
    assert opts.max_rdy_count == 7
    assert opts.statsd_prefix == "x.%s"


def test_config_file_uses_nsq_key_names(tmp_path):
    config = write_config(tmp_path, """
id = 321
nsqlookupd_tcp_addresses = ["127.0.0.1:4160", "127.0.0.1:4161"]
max_msg_size = 4096
e2e_processing_latency_percentiles = [0.5, 0.99]
auth_http_addresses = ["127.0.0.1:4181"]
""")
    opts = parse("--config", config)
    assert opts.node_id == 321
    assert opts.lookupd_tcp_address == ["127.0.0.1:4160", "127.0.0.1:4161"]
    assert opts.max_msg_size == 4096
    assert opts.e2e_processing_latency_percentile == [0.5, 0.99]
    assert opts.auth_http_address == ["127.0.0.1:4181"]


def test_config_file_integer_durations_are_milliseconds(tmp_path):
    config = write_config(tmp_path, """
msg_timeout = 5000
sync_timeout = 250
max_req_timeout = "2h"
output_buffer_timeout = "100ms"
""")
    opts = parse(f"-config={config}")
    assert opts.msg_timeout == pytest.approx(5.0)
    assert opts.sync_timeout == pytest.approx(0.25)
    assert opts.max_req_timeout == pytest.approx(7200.0)
    assert opts.output_buffer_timeout == pytest.approx(0.1)


def test_command_line_overrides_config_file(tmp_path):
    config = write_config(tmp_path, """
mem_queue_size = 5
msg_timeout = 1000
nsqlookupd_tcp_addresses = ["127.0.0.1:1"]
id = 9
""")
    # Even a command-line value equal to the default wins over the file.
    opts = parse("--mem-queue-size=10000", f"--config={config}", "--msg-timeout=3s",
                 "--lookupd-tcp-address=127.0.0.1:2", "--node-id=8")
    assert opts.mem_queue_size == 10000
    assert opts.msg_timeout == 3.0
    assert opts.lookupd_tcp_address == ["127.0.0.1:2"]
    assert opts.node_id == 8


def test_config_file_values_fill_what_the_command_line_leaves(tmp_path):
    config = write_config(tmp_path, "mem_queue_size = 5\nmax_rdy_count = 9\n")
    opts = parse(f"--config={config}", "--max-rdy-count=10")
    assert (opts.mem_queue_size, opts.max_rdy_count) == (5, 10)
    assert opts.msg_timeout == 60.0


def test_config_file_ignores_unknown_keys(tmp_path):
    config = write_config(tmp_path, 'not_an_option = 1\nmem_queue_size = 3\n')
    assert parse(f"--config={config}").mem_queue_size == 3


def test_missing_config_file_is_an_error(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(FatalError) as info:
        parse(f"--config={missing}")
    assert str(info.value) == (f"failed to load config file {missing} - "
                               f"open {missing}: no such file or directory")
    assert info.value.leveled


@pytest.mark.parametrize("text, message", [
    ('mem_queue_size = "many"', 'many (10000) for field MemQueueSize - '
                                'strconv.ParseInt: parsing "many": invalid syntax'),
    ("mem_queue_size = 1.5", "1.5 (10000) for field MemQueueSize - "
                             "invalid int64 value type float64"),
    ('msg_timeout = "soon"', 'soon (1m0s) for field MsgTimeout - time: invalid duration "soon"'),
    ("msg_timeout = true", "true (1m0s) for field MsgTimeout - "
                           "invalid time.Duration value type bool"),
    ('snappy = "maybe"', 'maybe (true) for field SnappyEnabled - '
                         'strconv.ParseBool: parsing "maybe": invalid syntax'),
    ('e2e_processing_latency_percentiles = "0.5,x"',
     '0.5,x ([]) for field E2EProcessingLatencyPercentiles - '
     'strconv.ParseFloat: parsing "x": invalid syntax'),
    ('max_rdy_count = [1]', "[1] (2500) for field MaxRdyCount - "
                            "invalid int64 value type []interface {}"),
])
def test_config_file_value_of_the_wrong_type_is_go_options_error(tmp_path, text, message):
    config = write_config(tmp_path, text + "\n")
    with pytest.raises(FatalError) as info:
        parse(f"--config={config}")
    assert str(info.value) == "ERROR: Resolve failed to coerce value " + message
    assert not info.value.leveled    # go-options logs through Go's standard logger


@pytest.mark.parametrize("text, message", [
    ('log_level = "loud"', "failed parsing log_level loud"),
    ('tls_required = "maybe"', "failed parsing tls_required maybe"),
    ('tls_min_version = "tls9"', "failed parsing tls_min_version tls9"),
])
def test_config_file_bad_choice_is_nsqds_fatal(tmp_path, text, message):
    config = write_config(tmp_path, text + "\n")
    with pytest.raises(FatalError) as info:
        parse(f"--config={config}")
    assert str(info.value) == message and info.value.leveled


def test_config_file_coerces_strings_as_go_options_does(tmp_path):
    config = write_config(tmp_path, """
mem_queue_size = "12"
nsqlookupd_tcp_addresses = "a:1,b:2"
e2e_processing_latency_percentiles = "0.5, 0.99"
snappy = "f"
tls_required = true
""")
    opts = parse(f"--config={config}")
    assert opts.mem_queue_size == 12
    assert opts.lookupd_tcp_address == ["a:1", "b:2"]
    assert opts.e2e_processing_latency_percentile == [0.5, 0.99]
    assert opts.snappy is False
    assert opts.tls_required == "true"


def test_config_file_node_id_range_is_checked(tmp_path):
    config = write_config(tmp_path, "id = 5000\n")
    with pytest.raises(InvalidOptions, match=r"^--node-id must be \[0,1024\)$"):
        parse(f"--config={config}")


def test_version_is_answered_before_the_config_file_is_read(tmp_path):
    assert parse(f"--config={tmp_path / 'missing.toml'}", "--version").version is True


# -- defaults -----------------------------------------------------------------------------

def test_defaults_match_nsq_1_3():
    opts = parse()
    expected = {
        "tcp_address": "0.0.0.0:4150",
        "http_address": "0.0.0.0:4151",
        "https_address": "0.0.0.0:4152",
        "log_level": "info",
        "log_prefix": "[nsqd] ",
        "data_path": "",
        "mem_queue_size": 10000,
        "max_bytes_per_file": 104857600,
        "sync_every": 2500,
        "sync_timeout": 2.0,
        "msg_timeout": 60.0,
        "max_msg_timeout": 900.0,
        "max_msg_size": 1048576,
        "max_req_timeout": 3600.0,
        "max_body_size": 5242880,
        "max_heartbeat_interval": 60.0,
        "max_rdy_count": 2500,
        "max_output_buffer_size": 65536,
        "max_output_buffer_timeout": 30.0,
        "min_output_buffer_timeout": 0.025,
        "output_buffer_timeout": 0.25,
        "max_channel_consumers": 0,
        "http_client_connect_timeout": 2.0,
        "http_client_request_timeout": 5.0,
        "broadcast_tcp_port": 0,
        "broadcast_http_port": 0,
        "lookupd_tcp_address": [],
        "statsd_address": "",
        "statsd_interval": 60.0,
        "statsd_mem_stats": True,
        "statsd_prefix": "nsq.%s",
        "statsd_exclude_ephemeral": False,
        "e2e_processing_latency_window_time": 600.0,
        "e2e_processing_latency_percentile": [],
        "tls_required": "false",
        "tls_min_version": "tls1.0",
        "deflate": True,
        "max_deflate_level": 6,
        "snappy": True,
        "version": False,
    }
    actual = {key: getattr(opts, key) for key in expected}
    assert actual == expected


def test_broadcast_address_defaults_to_hostname():
    assert parse().broadcast_address == socket.gethostname()
    assert parse("--broadcast-address=example.com").broadcast_address == "example.com"


def test_node_id_default_is_the_hostname_hash():
    def nsq_hash(hostname):
        return zlib.crc32(hashlib.md5(hostname.encode()).digest()) % 1024

    for hostname in ("localhost", "nsqd-01.example.com", "a", "x" * 200):
        node_id = default_node_id(hostname)
        assert 0 <= node_id < 1024
        assert node_id == default_node_id(hostname) == nsq_hash(hostname)
    assert len({default_node_id(f"host{i}") for i in range(50)}) > 1
    assert parse().node_id == default_node_id(socket.gethostname())
