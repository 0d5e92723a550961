"""nsq_to_file's output files: their names, revisions, and the move to the output dir.

Names come from ``--filename-format`` as in NSQ: ``<TOPIC>``, ``<HOST>`` (the short
hostname, or ``--host-identifier`` with ``<SHORT_HOST>`` / ``<HOSTNAME>`` replaced),
``<PID>`` and ``<DATETIME>`` (``--datetime-format``, Go's strftime subset, local time)
are filled in, and ``<REV>`` becomes ``-000000``, ``-000001``... so that a new file never
overwrites an old one. ``<REV>`` is required when gzip, rotation or a separate work dir
is on, and dropped otherwise; gzip output gets ``.gz`` appended.

A file is written in ``--work-dir`` and, once closed, moved to ``--output-dir`` under
the same relative name without overwriting anything (a hard link then an unlink; on a
clash the next free revision is taken).
"""

import logging
import os
import re
import socket
import time

from .options import ToolError

log = logging.getLogger("greensq.tools")

# The strftime directives NSQ's nsq_to_file understands; any other %x stays as it is.
_STRFTIME_DIRECTIVES = set("BbmAadHIMSYypZz%")
_DIRECTIVE = re.compile(r"%(.)", re.S)


def go_strftime(fmt, when=None):
    """``fmt`` formatted like nsq_to_file's strftime (local time)."""
    stamp = time.localtime(when)
    return _DIRECTIVE.sub(
        lambda m: time.strftime(m.group(0), stamp) if m.group(1) in _STRFTIME_DIRECTIVES
        else m.group(0), fmt)


def host_identifier(template):
    hostname = socket.gethostname()
    short = hostname.split(".")[0]
    if not template:
        return short
    return template.replace("<SHORT_HOST>", short).replace("<HOSTNAME>", hostname)


def filename_template(opts, topic):
    """The topic's filename format with everything but ``<DATETIME>``/``<REV>`` filled."""
    template = opts.filename_format
    if opts.gzip or opts.rotate_size > 0 or opts.rotate_interval > 0 \
            or opts.work_dir != opts.output_dir:
        if "<REV>" not in template:
            raise ToolError("missing <REV> in --filename-format when gzip, rotation, "
                            "or work dir enabled")
    else:
        template = template.replace("<REV>", "")
    template = (template.replace("<TOPIC>", topic)
                .replace("<HOST>", host_identifier(opts.host_identifier))
                .replace("<PID>", str(os.getpid())))
    if opts.gzip and not template.endswith(".gz"):
        template += ".gz"
    return template


def with_rev(name, rev):
    return name.replace("<REV>", "-%06d" % rev)


class FileNamer:
    """The current file name of one topic (``<DATETIME>`` resolved, ``<REV>`` kept);
    strftime runs once a second at most, not once per message."""

    def __init__(self, opts, topic):
        self.template = filename_template(opts, topic)
        self.datetime_format = opts.datetime_format
        self._second = None
        self._name = None

    def current(self):
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._name = self.template.replace(
                "<DATETIME>", go_strftime(self.datetime_format, second))
        return self._name


def _make_parent(path):
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, mode=0o770, exist_ok=True)


class ArchiveFile:
    """One open output file in the work dir (a raw file descriptor)."""

    def __init__(self, fd, name, rev, path, size, label):
        self.label = label        # "[topic/channel]", for the log lines
        self.fd = fd
        self.name = name          # relative name with <REV> still in it
        self.rev = rev
        self.path = path
        self.size = size          # bytes in the file when it was opened
        self.written = 0          # bytes written since

    @classmethod
    def open(cls, opts, name, rev, label):
        """Open ``name`` in the work dir at the first free revision from ``rev``: one
        whose output file does not exist yet (with a separate work dir), which can be
        created (exclusively with gzip or --rotate-interval, else appended to) and is not
        already over --rotate-size. Raises OSError."""
        exclusive = opts.gzip or opts.rotate_interval > 0
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_APPEND)
        while True:
            relative = with_rev(name, rev)
            path = os.path.join(opts.work_dir, relative)
            _make_parent(path)
            if opts.work_dir != opts.output_dir:
                output = os.path.join(opts.output_dir, relative)
                _make_parent(output)
                if os.path.exists(output):
                    log.warning("%s output file already exists: %s", label, output)
                    rev += 1
                    continue
            try:
                fd = os.open(path, flags, 0o666)
            except FileExistsError:
                log.warning("%s working file already exists: %s", label, path)
                rev += 1
                continue
            size = os.fstat(fd).st_size
            if opts.rotate_size > 0 and size > opts.rotate_size:
                log.info("%s %s currently %d bytes (> %d), rotating...", label, path, size,
                         opts.rotate_size)
                os.close(fd)
                rev += 1
                continue
            log.info("%s opening %s", label, path)
            return cls(fd, name, rev, path, size, label)

    def write(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.written += len(data)

    def sync(self):
        os.fsync(self.fd)

    def close(self, opts):
        """Close the file and move it to the output dir (see the module docstring)."""
        os.close(self.fd)
        if opts.work_dir == opts.output_dir:
            return
        rev = self.rev
        destination = os.path.join(opts.output_dir, with_rev(self.name, rev))
        log.info("%s moving finished file %s to %s", self.label, self.path, destination)
        while True:
            try:
                os.link(self.path, destination)
                break
            except FileExistsError:
                log.warning("%s destination file already exists: %s", self.label, destination)
                rev += 1
                destination = os.path.join(opts.output_dir, with_rev(self.name, rev))
        os.unlink(self.path)
