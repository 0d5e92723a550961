"""What every daemon and tool says about a bad command line or config file, and its exit
code, as NSQ 1.3's Go programs do.

Go's flag package prints its message, then the usage (``Usage of nsqd:`` and one entry
per flag: ``  -name type`` with Go's type names, the help on the next line after a tab),
and exits 2; ``-help`` prints the usage and exits 0. NSQ's daemons refuse a config file
with one log line and exit 1. Each program runs as a real process here.
"""

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow   # runs every daemon and tool

DAEMONS = {"nsqd": "greensq.http.nsqd_launcher",
           "nsqlookupd": "greensq.http.nsqlookupd_launcher",
           "nsqadmin": "greensq.http.nsqadmin_launcher"}
TOOLS = {name: f"greensq.services.tools.{name}" for name in
         ("nsq_to_file", "nsq_to_http", "nsq_to_nsq", "nsq_tail", "nsq_stat", "to_nsq")}
PROGRAMS = {**DAEMONS, **TOOLS}

GO_TYPES = {"string", "int", "float", "duration", "value", "uint"}
# "  -name type" (or a bare "  -name" for booleans), then "    \t" and the help
USAGE_ENTRY = re.compile(r"  -(?P<name>[a-z0-9-]+)(?: (?P<type>\S+))?\n    \t(?P<help>.*)")
STD_LOG = r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d "
DAEMON_LOG = STD_LOG[:-1] + r"\.\d{6} "


def run(program, *args, timeout=30):
    done = subprocess.run([sys.executable, "-m", PROGRAMS[program], *args],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout, done.stderr


def usage_entries(text):
    """``{flag: (type, help)}`` from a usage text; fails on any line out of Go's layout."""
    entries = {}
    pos = 0
    for match in USAGE_ENTRY.finditer(text):
        assert match.start() == pos, f"not Go's layout: {text[pos:match.start()]!r}"
        entries[match["name"]] = (match["type"] or "", match["help"])
        pos = match.end() + 1
    assert pos == len(text), f"not Go's layout: {text[pos:]!r}"
    return entries


@pytest.mark.parametrize("program", PROGRAMS)
def test_help_is_gos_usage_and_exits_0(program):
    status, out, err = run(program, "--help")
    assert status == 0 and out == ""
    header = f"Usage of {program}:\n"
    assert err.startswith(header)
    entries = usage_entries(err[len(header):])
    assert list(entries) == sorted(entries)
    for name, (type_name, _) in entries.items():
        assert type_name in GO_TYPES | {""} or name == "rotate-size", (name, type_name)
    assert entries["version"][0] == ""


@pytest.mark.parametrize("program, flag, type_name, default", [
    ("nsqd", "mem-queue-size", "int", "(default 10000)"),
    ("nsqd", "msg-timeout", "duration", "(default 1m0s)"),
    ("nsqd", "http-address", "string", '(default "0.0.0.0:4151")'),
    ("nsqd", "log-level", "value", "(default INFO)"),
    ("nsqd", "lookupd-tcp-address", "value", None),
    ("nsqd", "e2e-processing-latency-percentile", "value", None),
    ("nsqd", "snappy", "", "(default true)"),
    ("nsqd", "tls-required", "", None),
    ("nsqlookupd", "tombstone-lifetime", "duration", "(default 45s)"),
    ("nsqadmin", "admin-user", "value", None),
    ("nsq_to_http", "sample", "float", "(default 1)"),
    ("nsq_to_file", "rotate-size", "rotate-size", None),
    ("nsq_stat", "count", "value", None),
    ("to_nsq", "delimiter", "string", r'(default "\n")'),
])
def test_help_shows_go_type_names_and_defaults(program, flag, type_name, default):
    _, _, err = run(program, "-h")
    shown_type, help_text = usage_entries(err.split("\n", 1)[1])[flag]
    assert shown_type == type_name
    if default is None:
        assert "(default" not in help_text
    else:
        assert help_text.endswith(" " + default)


@pytest.mark.parametrize("program, args, message", [
    ("nsqd", ["--mem-queue-size=abc"], 'invalid value "abc" for flag -mem-queue-size: parse error'),
    ("nsqd", ["--max-rdy-count", "99999999999999999999"],
     'invalid value "99999999999999999999" for flag -max-rdy-count: value out of range'),
    ("nsqd", ["--msg-timeout=1x"], 'invalid value "1x" for flag -msg-timeout: parse error'),
    ("nsqd", ["--snappy=maybe"], 'invalid boolean value "maybe" for -snappy: parse error'),
    ("nsqd", ["--log-level=loud"], 'invalid value "loud" for flag -log-level: '
                                   "invalid log level 'loud' (debug, info, warn, error, fatal)"),
    ("nsqlookupd", ["--tombstone-lifetime=soon"],
     'invalid value "soon" for flag -tombstone-lifetime: parse error'),
    ("nsqadmin", ["--proxy-graphite=2"], 'invalid boolean value "2" for -proxy-graphite: '
                                         "parse error"),
    ("nsq_tail", ["--max-in-flight=x"], 'invalid value "x" for flag -max-in-flight: parse error'),
    ("nsq_to_http", ["--sample=half"], 'invalid value "half" for flag -sample: parse error'),
    ("nsq_stat", ["--count=x"], 'invalid value "x" for flag -count: '
                                'strconv.ParseInt: parsing "x": invalid syntax'),
    ("to_nsq", ["--rate"], "flag needs an argument: -rate"),
    # go-nsq's options are checked as the flag is parsed, before any other check
    ("nsq_tail", ["--consumer-opt=nope,1"],
     'invalid value "nope,1" for flag -consumer-opt: invalid option nope'),
    ("to_nsq", ["--producer-opt=max_in_flight,-1"],
     'invalid value "max_in_flight,-1" for flag -producer-opt: invalid max_in_flight ! -1 < 0'),
])
def test_bad_flag_prints_gos_message_then_the_usage_and_exits_2(program, args, message):
    status, out, err = run(program, *args)
    assert status == 2 and out == ""
    assert err.startswith(f"{message}\nUsage of {program}:\n  -"), err
    assert "Traceback" not in err


def write_config(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return f"--config={path}"


@pytest.mark.parametrize("program, text, line", [
    ("nsqd", 'mem_queue_size = "abc"\n',
     STD_LOG + re.escape('ERROR: Resolve failed to coerce value abc (10000) for field '
                         'MemQueueSize - strconv.ParseInt: parsing "abc": invalid syntax')),
    ("nsqd", "msg_timeout = true\n",
     STD_LOG + re.escape("ERROR: Resolve failed to coerce value true (1m0s) for field "
                         "MsgTimeout - invalid time.Duration value type bool")),
    ("nsqd", 'log_level = "loud"\n',
     r"\[nsqd\] " + DAEMON_LOG + "FATAL: failed parsing log_level loud"),
    ("nsqd", "id = 5000\n",
     r"\[nsqd\] " + DAEMON_LOG + re.escape("FATAL: failed to instantiate nsqd - "
                                           "--node-id must be [0,1024)")),
    ("nsqlookupd", 'inactive_producer_timeout = "forever"\n',
     STD_LOG + re.escape('ERROR: Resolve failed to coerce value forever (5m0s) for field '
                         'InactiveProducerTimeout - time: invalid duration "forever"')),
    ("nsqadmin", "log_level = 5\n",
     r"\[nsqadmin\] " + DAEMON_LOG + "FATAL: failed parsing log_level 5"),
    ("nsqadmin", "mem_queue_size = \n",
     r"\[nsqadmin\] " + DAEMON_LOG + "FATAL: failed to load config file .*config.toml - toml: .+"),
])
def test_bad_config_file_is_one_fatal_line_and_exit_1(tmp_path, program, text, line):
    status, out, err = run(program, write_config(tmp_path, text), "--http-address=127.0.0.1:0",
                           *(["--tcp-address=127.0.0.1:0"] if program != "nsqadmin" else []),
                           *([f"--data-path={tmp_path}"] if program == "nsqd" else []))
    assert status == 1 and out == ""
    assert re.fullmatch(line + "\n", err), err


@pytest.mark.parametrize("program", DAEMONS)
def test_missing_config_file(tmp_path, program):
    missing = tmp_path / "missing.toml"
    status, _, err = run(program, f"--config={missing}")
    assert status == 1
    assert re.fullmatch(rf"\[{program}\] {DAEMON_LOG}FATAL: failed to load config file "
                        rf"{missing} - open {missing}: no such file or directory\n", err), err


@pytest.mark.parametrize("flags,reason", [
    (["--http-client-tls-cert={missing}", "--http-client-tls-key={missing}"],
     "failed to LoadX509KeyPair {missing}, {missing} - open {missing}: "
     "no such file or directory"),
    (["--http-client-tls-cert={junk}", "--http-client-tls-key={junk}"],
     "failed to LoadX509KeyPair {junk}, {junk} - "
     "tls: failed to find any PEM data in certificate input"),
    (["--http-client-tls-root-ca-file={missing}"],
     "failed to read TLS root CA file {missing} - open {missing}: no such file or directory"),
    (["--http-client-tls-root-ca-file={junk}"], "failed to AppendCertsFromPEM {junk}"),
])
def test_nsqadmin_refuses_client_tls_files_it_cannot_load(tmp_path, flags, reason):
    paths = {"missing": tmp_path / "missing.pem", "junk": tmp_path / "junk.pem"}
    paths["junk"].write_text("not a certificate\n")
    status, out, err = run("nsqadmin", "--http-address=127.0.0.1:0",
                           "--nsqd-http-address=127.0.0.1:4151",
                           *(flag.format(**paths) for flag in flags))
    assert status == 1 and out == ""
    expected = "FATAL: failed to instantiate nsqadmin - " + reason.format(**paths)
    assert re.fullmatch(rf"\[nsqadmin\] {DAEMON_LOG}{re.escape(expected)}\n", err), err
