"""nsq_to_file's archive of one topic: messages to files, FIN only once on disk.

Each message's body and a newline go to the topic's current file
(:class:`~.archive_files.ArchiveFile`). The message is not answered when its handler
returns: it waits, in flight on nsqd, until the file has been fsynced, and only then
is it FINished. So a crash (even SIGKILL) can lose nothing that was FINished: what was
not synced is redelivered by nsqd (NSQ delivers at least once; such messages may be
written twice).

When a sync happens, as in NSQ: every ``--sync-interval``; when the consumer is starved
(nsqd will send no more until some are answered); when a file is closed (rotation,
SIGHUP, exit). Starved means by messages that all wait for a sync: the consumer counts
a burst in flight as soon as it is read, so the check comes at the end of each burst
(and when a sync ends), never with part of a burst still to handle. Syncs run one at a
time in a syncer greenlet, with fsync in the hub's thread pool, so reading from nsqd
goes on meanwhile.

Plain files are written as messages arrive (one ``write`` per burst, at the end of the
event-loop turn), so ``tail -f`` sees them at once. With ``--gzip`` the bytes of each
sync become one complete gzip member, compressed in the thread pool: a gzip file is a
concatenation of members, so a file cut short by a crash still decompresses up to its
last sync, as with NSQ (which closes the gzip stream at each sync).

Rotation (checked before each message and at each tick, as in NSQ): a new
``<DATETIME>``, ``--rotate-interval`` since the file was opened, or more than
``--rotate-size`` bytes (of message data, before compression). On a tick with nothing
to rotate into, ``--skip-empty-files`` closes the file instead of opening an empty one.
"""

import gzip
import logging
import time
from collections import namedtuple

import gevent
from gevent.queue import Queue

from . import runner
from .archive_files import ArchiveFile, FileNamer
from .client_config import make_consumer

log = logging.getLogger("greensq.tools")

SyncJob = namedtuple("SyncJob", "file data messages close")
_STOP = object()


class TopicArchive:
    """The consumer, the current file and the syncer of one topic."""

    def __init__(self, program, opts, topic, config):
        self.opts = opts
        self.topic = topic
        self.label = f"[{topic}/{opts.channel}]"
        self.namer = FileNamer(opts, topic)
        self.gzip = opts.gzip
        self.consumer = make_consumer(program, opts, topic, self._on_message, config)
        self.file = None          # the ArchiveFile being written, opened on demand
        self.file_name = None     # the last file's name (<DATETIME> resolved) and revision
        self.rev = 0
        self.opened_at = 0.0
        self.size = 0             # bytes of message data in it
        self.chunks = []          # bytes for the current file not written yet
        self.unsynced = []        # messages in chunks or written, not yet handed to a sync
        self.burst_end_scheduled = False
        self.stopping = False
        self.queued_syncs = 0     # jobs handed to the syncer and not done yet
        self.jobs = Queue()
        self.syncer = None
        self.ticker = None

    def start(self):
        self.consumer.start()     # what arrives before the syncer runs waits in its queue
        self.syncer = gevent.spawn(self._sync_loop)
        self.ticker = gevent.spawn(self._tick_loop)
        return self

    def stop(self):
        """Take no more messages, sync and FIN what is held, close (and move) the file."""
        self.stopping = True
        self.ticker.kill()
        self.sync()
        self.consumer.close()
        self._close_current()
        self.jobs.put(_STOP)
        self.syncer.join()

    def reopen(self):
        """SIGHUP: close the current file now; the next message starts a new one."""
        self._close_current()

    # -- messages (on the hub, never blocking) --------------------------------------------

    def _on_message(self, message):
        message.enable_async()
        if self._rotation_due():
            self._open_next()
        body = message.body
        self.chunks.append(body)
        self.chunks.append(b"\n")
        self.size += len(body) + 1
        self.unsynced.append(message)
        if not self.burst_end_scheduled:
            self.burst_end_scheduled = True
            gevent.get_hub().loop.run_callback(self._burst_end)
        if self.stopping:
            self.sync()

    def _burst_end(self):
        """After a burst of messages: write them (plain files), and sync if due. Checked
        here rather than per message because the consumer counts a whole burst in
        flight before the first of it is handled."""
        self.burst_end_scheduled = False
        if not self.gzip:
            self._write_chunks()
        self._sync_if_due()

    def _sync_if_due(self):
        """Sync now if no sync is running and the consumer is starved by messages that
        all wait for a sync (not by messages received and not handled yet: they are
        about to join the next sync)."""
        consumer = self.consumer
        if self.unsynced and not self.queued_syncs and not consumer.unhandled \
                and consumer.is_starved():
            self.sync()

    def _write_chunks(self):
        """Hand the plain file's pending bytes to the OS (no fsync)."""
        if self.chunks and self.file is not None:
            data = b"".join(self.chunks)
            self.chunks = []
            try:
                self.file.write(data)
            except OSError as exc:
                runner.fatal(f"{self.label} writing message to disk: {exc}")

    def _rotation_due(self):
        if self.file is None:
            return True
        name = self.namer.current()
        if name != self.file_name:
            log.info("%s new filename %s, rotating...", self.label, name)
            return True
        interval = self.opts.rotate_interval
        if interval > 0:
            age = time.monotonic() - self.opened_at
            if age > interval:
                log.info("%s %.3fs since last open, rotating...", self.label, age)
                return True
        if 0 < self.opts.rotate_size < self.size:
            log.info("%s %s currently %d bytes (> %d), rotating...", self.label,
                     self.file.path, self.size, self.opts.rotate_size)
            return True
        return False

    def _open_next(self):
        self._close_current()
        name = self.namer.current()
        rev = self.rev + 1 if name == self.file_name else 0
        try:
            self.file = ArchiveFile.open(self.opts, name, rev, self.label)
        except OSError as exc:
            runner.fatal(f"{self.label} unable to open {name}: {exc}")
        self.file_name = name
        self.rev = self.file.rev
        self.opened_at = time.monotonic()
        self.size = self.file.size

    def _close_current(self):
        if self.file is not None:
            self._queue_sync(close=True)
            self.file = None

    def sync(self):
        """Queue a sync of what the current file holds (its messages FIN after it)."""
        if self.file is not None and self.unsynced:
            self._queue_sync(close=False)

    def _queue_sync(self, close):
        if self.gzip:
            data = b"".join(self.chunks)
        else:
            self._write_chunks()
            data = b""
        self.queued_syncs += 1
        self.jobs.put(SyncJob(self.file, data, self.unsynced, close))
        self.chunks = []
        self.unsynced = []

    # -- the syncer -----------------------------------------------------------------------

    def _sync_loop(self):
        threadpool = gevent.get_hub().threadpool
        while True:
            job = self.jobs.get()
            if job is _STOP:
                return
            if job.messages:
                log.info("%s syncing %d records to disk", self.label, len(job.messages))
            try:
                threadpool.apply(self._sync_job, (job,))
                if job.close:
                    job.file.close(self.opts)
            except OSError as exc:
                runner.fatal(f"{self.label} failed syncing messages: {exc}")
            self.consumer.finish_all(job.messages)
            self.queued_syncs -= 1
            self._sync_if_due()

    def _sync_job(self, job):
        """In a pool thread: compress (gzip), write and fsync one job's data."""
        data = job.data
        if self.gzip and (data or (job.close and job.file.written == 0)):
            # One gzip member per sync; a closed file holds at least one (maybe empty).
            data = gzip.compress(data, self.opts.gzip_level, mtime=0)
        if data:
            job.file.write(data)
        job.file.sync()

    def _tick_loop(self):
        while True:
            gevent.sleep(self.opts.sync_interval)
            if self._rotation_due():
                if self.opts.skip_empty_files:
                    self._close_current()
                else:
                    self._open_next()
            self.sync()
