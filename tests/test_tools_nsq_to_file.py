"""nsq_to_file as a process against real greensq daemons: file names, FIN only after the
sync, rotation by size, by interval and on SIGHUP, gzip members, the work dir, topic
discovery through lookupd, and no FINished message lost across a SIGKILL."""

import gzip
import json
import os
import re
import signal
import socket
import time

from support import wait_until
from tool_checks import (channel_done, create_channel, files_under, gunzip_synced, publish,
                         wait_channel_done)


def tcp(daemon):
    return f"--nsqd-tcp-address={daemon.tcp_address}"


def read_lines(path):
    with open(path, "rb") as fh:
        data = fh.read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    return data.splitlines()


def test_archives_a_topic_into_nsqs_default_file_name(nsqd, tool_factory, tmp_path):
    bodies = [b"message %d" % i for i in range(30)]
    publish(nsqd, "archive", bodies)
    hours = {time.strftime("%Y-%m-%d_%H")}
    archiver = tool_factory("nsq_to_file", "--topic=archive", tcp(nsqd),
                            f"--output-dir={tmp_path / 'out'}", "--sync-interval=50ms")
    wait_channel_done(nsqd, "archive", "nsq_to_file", len(bodies))
    assert archiver.stop() == 0, archiver.log_text()
    hours.add(time.strftime("%Y-%m-%d_%H"))
    host = socket.gethostname().split(".")[0]
    (path,) = files_under(tmp_path / "out")
    assert os.path.basename(path) in {f"archive.{host}.{hour}.log" for hour in hours}
    assert read_lines(path) == bodies
    assert "syncing 30 records to disk" in archiver.log_text()


def test_a_message_is_finished_only_once_synced(nsqd, tool_factory, tmp_path):
    """Written at once, held in flight until the sync (here: the clean exit)."""
    bodies = [b"held %d" % i for i in range(10)]
    create_channel(nsqd, "held", "nsq_to_file")
    publish(nsqd, "held", bodies)
    archiver = tool_factory("nsq_to_file", "--topic=held", tcp(nsqd), "--sync-interval=1h",
                            f"--output-dir={tmp_path}", "--filename-format=<TOPIC>.log")
    path = str(tmp_path / "held.log")
    wait_until(lambda: os.path.exists(path) and len(read_lines(path)) == 10,
               message="10 lines written")
    stats = nsqd.channel_stats("held", "nsq_to_file")
    assert (stats["in_flight_count"], stats["clients"][0]["finish_count"]) == (10, 0)
    assert archiver.stop(signal.SIGINT) == 0, archiver.log_text()
    stats = wait_channel_done(nsqd, "held", "nsq_to_file", 10)
    assert stats["requeue_count"] == 0
    assert read_lines(path) == bodies


def test_gzip_rotation_by_size_through_the_work_dir(nsqd, tool_factory, tmp_path):
    bodies = [b"%03d " % i + b"x" * 46 for i in range(100)]    # 51 bytes with the newline
    publish(nsqd, "sized", bodies)
    work, out = tmp_path / "work", tmp_path / "out"
    archiver = tool_factory(
        "nsq_to_file", "--topic=sized", tcp(nsqd), "--gzip", "--rotate-size=1000",
        f"--work-dir={work}", f"--output-dir={out}", "--host-identifier=host-<SHORT_HOST>",
        "--filename-format=<TOPIC>/<HOST><REV>.log", "--sync-interval=50ms", "--skip-empty-files")
    wait_channel_done(nsqd, "sized", "nsq_to_file", len(bodies))
    assert archiver.stop() == 0, archiver.log_text()
    assert files_under(work) == []
    paths = files_under(out)
    short = socket.gethostname().split(".")[0]
    assert [os.path.basename(p) for p in paths] == [
        f"host-{short}-{rev:06d}.log.gz" for rev in range(len(paths))]
    contents = [read_lines(p) for p in paths]
    assert [line for lines in contents for line in lines] == bodies
    # A file rotates once past 1000 bytes: after 20 lines of 51 bytes.
    assert [len(lines) for lines in contents] == [20] * 5


def test_rotation_by_interval_and_skip_empty_files(nsqd, tool_factory, tmp_path):
    out = tmp_path / "out"
    archiver = tool_factory(
        "nsq_to_file", "--topic=ticks", tcp(nsqd), f"--output-dir={out}",
        f"--work-dir={tmp_path / 'work'}", "--rotate-interval=100ms", "--sync-interval=100ms",
        "--skip-empty-files")
    for batch in range(2):
        bodies = [b"batch %d message %d" % (batch, i) for i in range(5)]
        publish(nsqd, "ticks", bodies)
        # The tick after the interval closes the file and moves it out.
        wait_until(lambda: len(files_under(out)) == batch + 1, message="file moved out")
    assert archiver.stop() == 0, archiver.log_text()
    contents = [read_lines(p) for p in files_under(out)]
    assert contents == [[b"batch %d message %d" % (b, i) for i in range(5)] for b in range(2)]

    # Without --skip-empty-files every interval opens a new (possibly empty) file.
    empty = tmp_path / "empty"
    archiver = tool_factory(
        "nsq_to_file", "--topic=ticks", tcp(nsqd), f"--output-dir={empty}",
        "--rotate-interval=50ms", "--sync-interval=50ms", "--channel=second")
    wait_until(lambda: len(files_under(empty)) >= 3, message="three files")
    assert archiver.stop() == 0, archiver.log_text()


def test_topic_pattern_discovers_topics_through_lookupd(nsqd_factory, lookupd_factory,
                                                        tool_factory, tmp_path):
    lookupd = lookupd_factory()
    nsqd = nsqd_factory(f"--lookupd-tcp-address={lookupd.tcp_address}",
                        "--broadcast-address=127.0.0.1")
    for topic in ("match_a", "other"):
        publish(nsqd, topic, [topic.encode()])
    wait_until(lambda: set(json.loads(lookupd.http("GET", "/topics")[2])["topics"])
               == {"match_a", "other"}, message="topics registered")
    archiver = tool_factory(
        "nsq_to_file", "--topic-pattern=^match_", "--topic-refresh=100ms",
        f"--lookupd-http-address={lookupd.http_address}", f"--output-dir={tmp_path / 'out'}",
        "--filename-format=<TOPIC>.log", "--sync-interval=50ms")
    wait_channel_done(nsqd, "match_a", "nsq_to_file", 1)
    publish(nsqd, "match_b", [b"match_b"])       # a topic that appears later
    wait_channel_done(nsqd, "match_b", "nsq_to_file", 1)
    assert archiver.stop() == 0, archiver.log_text()
    assert [os.path.basename(p) for p in files_under(tmp_path / "out")] == [
        "match_a.log", "match_b.log"]
    assert nsqd.channel_stats("other", "nsq_to_file") is None
    assert re.search(r"skipping topic other \(doesn't match pattern \^match_\)",
                     archiver.log_text())


def test_sigkill_then_restart_loses_no_finished_message(nsqd, tool_factory, tmp_path):
    bodies = [b"unique-%05d-" % i + b"y" * 80 for i in range(10000)]
    publish(nsqd, "crash", bodies)
    args = ("--topic=crash", tcp(nsqd), "--gzip", "--max-in-flight=50", "--sync-interval=50ms",
            f"--work-dir={tmp_path / 'work'}", f"--output-dir={tmp_path / 'out'}")
    archiver = tool_factory("nsq_to_file", *args)

    def finished():
        stats = nsqd.channel_stats("crash", "nsq_to_file")
        return stats and stats["clients"] and stats["clients"][0]["finish_count"] >= 2000

    wait_until(finished, timeout=30, message="2000 messages archived")
    archiver.proc.kill()
    archiver.wait()
    left = wait_until(lambda: nsqd.channel_stats("crash", "nsq_to_file")["client_count"] == 0
                      and nsqd.channel_stats("crash", "nsq_to_file"), message="disconnect")
    assert left["depth"] + left["in_flight_count"] + left["deferred_count"] > 0, \
        "the kill came after the end of the stream"
    restarted = tool_factory("nsq_to_file", *args)
    wait_until(lambda: channel_done(nsqd, "crash", "nsq_to_file", len(bodies)), timeout=60,
               message="everything archived after the restart")
    assert restarted.stop() == 0, restarted.log_text()
    archived = []
    for path in files_under(tmp_path):
        with open(path, "rb") as fh:
            archived += gunzip_synced(fh.read()).splitlines()
    assert set(archived) == set(bodies)


def test_sighup_closes_the_file_and_the_next_message_opens_another(nsqd, tool_factory, tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    # Without --skip-empty-files the next tick would open a new, empty file at once.
    archiver = tool_factory("nsq_to_file", "--topic=hup", tcp(nsqd), f"--work-dir={work}",
                            f"--output-dir={out}", "--sync-interval=50ms", "--skip-empty-files")
    publish(nsqd, "hup", [b"before"])
    wait_channel_done(nsqd, "hup", "nsq_to_file", 1)
    archiver.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(files_under(out)) == 1 and not files_under(work),
               message="file moved out")
    publish(nsqd, "hup", [b"after"])
    wait_until(lambda: len(files_under(work)) == 1, message="a new file")
    assert archiver.stop() == 0, archiver.log_text()
    assert [read_lines(p) for p in files_under(out)] == [[b"before"], [b"after"]]
