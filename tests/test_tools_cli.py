"""The utilities' command lines: --version, NSQ's fatal messages and exit codes, bad flags,
and go-nsq's --consumer-opt names; plus the pure pieces whose output must match Go's
bytes (filename formats, strftime, JSON re-encoding)."""

import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from greensq.services.shared.goflags import FlagError
from greensq.services.shared.version import __version__, build_word
from greensq.services.tools.archive_files import filename_template, go_strftime
from greensq.services.tools.client_config import GoNsqConfig
from greensq.services.tools.json_filter import go_json
from greensq.services.tools.options import ToolError

TOOLS = ["nsq_to_file", "nsq_to_http", "nsq_to_nsq", "nsq_tail", "nsq_stat", "to_nsq"]


def run(tool, *args):
    proc = subprocess.run([sys.executable, "-m", f"greensq.services.tools.{tool}", *args],
                          capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


@pytest.mark.slow   # runs the tools
@pytest.mark.parametrize("tool", TOOLS)
def test_version(tool):
    assert run(tool, "-version") == (0, f"{tool} v1.3.0 (built w/greensq-{__version__}-{build_word()})\n", "")


@pytest.mark.slow
@pytest.mark.parametrize("tool, args, message", [
    ("nsq_to_file", ["--nsqd-tcp-address=127.0.0.1:4150"], "--topic or --topic-pattern required"),
    ("nsq_to_file", ["--topic=t"], "--nsqd-tcp-address or --lookupd-http-address required."),
    ("nsq_to_file", ["--topic=t", "--nsqd-tcp-address=a:1", "--gzip-level=10"],
     "invalid --gzip-level value (10), should be 1-9"),
    ("nsq_to_file", ["--topic=t", "--nsqd-tcp-address=a:1", "--gzip",
                     "--filename-format=<TOPIC>.log"],
     "missing <REV> in --filename-format when gzip, rotation, or work dir enabled"),
    ("nsq_to_file", ["--topic-pattern=x", "--nsqd-tcp-address=a:1"],
     "--lookupd-http-address must be specified when no --topic specified"),
    ("nsq_to_http", ["--topic=t", "--nsqd-tcp-address=a:1"], "--get or --post required"),
    ("nsq_to_http", ["--topic=t", "--nsqd-tcp-address=a:1", "--get=http://x/"],
     "invalid GET address - must be a printf string"),
    ("nsq_to_http", ["--topic=t", "--nsqd-tcp-address=a:1", "--lookupd-http-address=b:2",
                     "--post=http://x/"],
     "use --nsqd-tcp-address or --lookupd-http-address not both"),
    ("nsq_to_http", ["--header=nocolon"], "--header value format should be 'key=value'"),
    ("nsq_to_nsq", ["--topic=bad topic", "--nsqd-tcp-address=a:1"], "--topic is invalid"),
    ("nsq_to_nsq", ["--topic=t", "--nsqd-tcp-address=a:1"],
     "--destination-nsqd-tcp-address required"),
    ("nsq_tail", ["--nsqd-tcp-address=a:1"], "--topic required"),
    ("nsq_tail", ["--topic=bad topic", "--nsqd-tcp-address=a:1"], "invalid topic name"),
    ("nsq_tail", ["--topic=t", "--nsqd-tcp-address=nowhere"],
     "dial tcp: address nowhere: missing port in address"),
    ("nsq_stat", ["--topic=t", "--channel=c", "--nsqd-http-address=http://a:1"],
     "--nsqd-http-address error - address should not contain scheme"),
    ("nsq_stat", ["--topic=t", "--channel=c", "--nsqd-http-address=a:1", "--count=0"],
     "--count should be positive"),
    ("to_nsq", ["--topic=t", "--nsqd-tcp-address=a:1", "--delimiter=ab"],
     "--delimiter must be a single byte"),
    ("to_nsq", ["--topic=t"], "--nsqd-tcp-address required"),
])
def test_a_command_line_that_cannot_work_exits_1_with_nsqs_message(tool, args, message):
    status, out, err = run(tool, *args)
    assert status == 1 and out == "", err
    assert err.rstrip("\n").endswith(" " + message), err
    assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--bogus"], "flag provided but not defined: -bogus"),
    (["--max-in-flight=x"], 'invalid value "x" for flag -max-in-flight'),
    (["--topic=t", "--nsqd-tcp-address=a:1", "--consumer-opt=nope,1"],
     'invalid value "nope,1" for flag -consumer-opt: invalid option nope'),
    (["--topic=t", "--nsqd-tcp-address=a:1", "--consumer-opt=max_attempts,x"],
     'invalid value "max_attempts,x" for flag -consumer-opt: failed to coerce option '
     'max_attempts (x) - strconv.ParseUint: parsing "x": invalid syntax'),
    (["--topic=t", "--nsqd-tcp-address=a:1", "--consumer-opt=rdy_redistribute_interval,1m"],
     'invalid value "rdy_redistribute_interval,1m" for flag -consumer-opt: '
     'invalid rdy_redistribute_interval ! 1m0s > 5s'),
])
def test_a_bad_flag_exits_2_with_gos_message(args, message):
    status, _, err = run("nsq_tail", *args)
    assert status == 2, err
    assert err.startswith(message), err


def test_go_nsq_options_map_onto_the_client():
    config = GoNsqConfig(["max_backoff_duration,0s", "backoff_multiplier,50ms",
                          "max_attempts,9", "default_requeue_delay,1m", "snappy",
                          "heartbeat_interval,10s", "read_timeout,30s", "dial-timeout,2s"])
    kwargs = config.consumer_kwargs()
    assert {k: kwargs[k] for k in ("max_backoff", "backoff", "max_attempts", "requeue_delay",
                                   "snappy", "heartbeat_interval", "connect_timeout")} == {
        "max_backoff": 0.0, "backoff": 0.1, "max_attempts": 9, "requeue_delay": 60.0,
        "snappy": True, "heartbeat_interval": 10.0, "connect_timeout": 2.0}
    assert "read_timeout" not in kwargs and config.ignored() == ["read_timeout"]
    producer = config.producer_kwargs()
    assert "max_attempts" not in producer and producer["snappy"] is True
    assert GoNsqConfig([]).consumer_kwargs() == {"backoff": 2.0}    # go-nsq's first backoff
    with pytest.raises(FlagError, match=r"ERROR: tls9 is not a tls version"):
        GoNsqConfig(["tls_min_version,tls9"])


def test_filename_formats():
    short = socket.gethostname().split(".")[0]
    opts = SimpleNamespace(filename_format="<TOPIC>.<HOST><REV>.<PID>.log", gzip=False,
                           rotate_size=0, rotate_interval=0, work_dir="/o", output_dir="/o",
                           host_identifier="")
    assert filename_template(opts, "t") == f"t.{short}.{os.getpid()}.log"
    opts.gzip = True
    opts.host_identifier = "<SHORT_HOST>-x"
    assert filename_template(opts, "t").startswith(f"t.{short}-x<REV>.")
    assert filename_template(opts, "t").endswith(".log.gz")
    opts.filename_format = "<TOPIC>.log"
    with pytest.raises(ToolError):
        filename_template(opts, "t")


def test_strftime_knows_nsqs_directives_only():
    when = time.mktime((2024, 3, 5, 7, 8, 9, 0, 0, -1))
    assert go_strftime("%Y-%m-%d_%H:%M:%S %y %j %%", when) == "2024-03-05_07:08:09 24 %j %"


def test_json_is_reencoded_as_go_does():
    assert go_json({"b": 1.5, "a": [1e21, 1e-7, 0.000001, 5.0], "c": "<&>", "d": None,
                    "e": {"z": True}}) == (
        '{"a":[1e+21,1e-7,0.000001,5],"b":1.5,"c":"\\u003c\\u0026\\u003e","d":null,'
        '"e":{"z":true}}')
