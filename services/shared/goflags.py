"""Command-line and config-file options, parsed and reported the way NSQ's Go programs do.

Existing init scripts, systemd units and client test harnesses start nsqd with every
spelling Go's ``flag`` package accepts, so this parser accepts exactly those:

* ``-name value``, ``--name value``, ``-name=value``, ``--name=value``;
* booleans as bare ``-name`` or ``-name=false`` (never ``-name false``);
* parsing stops at the first non-flag argument or at ``--``;
* repeatable flags (``--lookupd-tcp-address``) collect every value.

Mistakes are reported in Go's words, with Go's exit codes. A bad command line is a
:class:`FlagError`: its message, then the usage, exit 2 (``-h`` / ``-help`` print the usage
and exit 0). ``--config`` names a TOML file whose keys are the flag names with underscores;
a flag given on the command line wins over the file. A file that cannot be read, or a value
in it of the wrong type, is a :class:`FatalError`: one log line, exit 1, as NSQ's daemons
say it (its config loader coerces values as the go-options package does: integers meaning
milliseconds for durations, a comma-separated string for a list).
"""

import re
import sys
from dataclasses import dataclass, field
from typing import Callable

from greensq.services.shared.deferred import deferred_import
from greensq.services.shared.golog import daemon_line, exit_fatal, std_line
from greensq.services.shared.govalues import (
    format_value, go_type_of, parse_bool, parse_duration, parse_float, parse_int, quote)

tomllib = deferred_import("tomllib")   # only with --config: every daemon's arbiter parses flags


class FlagError(ValueError):
    """A bad command line; the message is what Go's flag package says. ``usage`` is the
    usage text printed after it, when a FlagSet raised it."""

    usage = ""


class FatalError(Exception):
    """A configuration NSQ's program refuses with a fatal log line, then exit 1.

    ``leveled`` lines are the daemon's own (``[nsqd] <time> FATAL: message``); the others
    come from Go's standard ``log`` package (``<time> message``), as go-options' are.
    """

    def __init__(self, message, leveled=True):
        super().__init__(message)
        self.leveled = leveled

    def line(self, program):
        if self.leveled:
            return daemon_line(f"[{program}] ", "FATAL", str(self))
        return std_line(str(self))


class InvalidOptions(ValueError):
    """Options that parse but that the program refuses to start with (Go's message text);
    a daemon logs ``FATAL: failed to instantiate <daemon> - <message>`` and exits 1."""


# -- flags --------------------------------------------------------------------------------

# How Go spells the words of NSQ's option fields (``nsqlookupd_tcp_addresses`` is the field
# ``NSQLookupdTCPAddresses``).
_INITIALISMS = {"id": "ID", "http": "HTTP", "https": "HTTPS", "tcp": "TCP", "udp": "UDP",
                "tls": "TLS", "ca": "CA", "e2e": "E2E", "url": "URL", "cidr": "CIDR",
                "acl": "ACL", "nsqd": "NSQD", "nsqlookupd": "NSQLookupd"}

_PARSERS = {"bool": parse_bool, "int": parse_int, "float": parse_float,
            "duration": parse_duration}
# The Go type of the options field behind each kind, as go-options names it.
_GO_FIELD_TYPES = {"bool": "bool", "int": "int64", "float": "float64", "floatlist": "float64",
                   "duration": "time.Duration"}

# The type name Go's usage shows for each kind ("value" is any flag.Value of a program's own).
_GO_TYPES = {"str": "string", "int": "int", "float": "float", "bool": "", "duration": "duration",
             "strlist": "value", "floatlist": "value"}


@dataclass
class Flag:
    """One option: its flag name (dashes), kind, default and help text.

    ``kind`` is one of ``str``, ``int``, ``float``, ``bool``, ``duration``, ``strlist``,
    ``floatlist``. A deprecated flag with ``alias_of`` sets that option instead; one without
    is accepted and ignored. ``choices`` limits a ``str`` flag (case-insensitively);
    ``choice_error(text)`` is the program's message for anything else.

    Where NSQ defines a flag with a ``flag.Value`` of its own, ``go_type`` and
    ``go_default`` are what Go's usage shows for it (``-log-level value ... (default
    INFO)``; an empty ``go_default`` shows none), and its errors keep that Value's own text.
    ``go_field`` is the name of the Go options field that config-file errors name, where
    it is not the config key in Go's CamelCase. ``check(text)``, for a ``strlist`` flag,
    vets each value as it is given, raising ValueError with the reason (go-nsq's
    ``--consumer-opt``).
    """

    name: str
    kind: str
    default: object
    help: str
    deprecated: bool = False
    alias_of: str | None = None
    choices: tuple = field(default=())
    choice_error: Callable[[str], str] | None = None
    config_key: str | None = None   # the TOML key, where NSQ's differs from the flag name
    bare: str | None = None         # value of a non-bool flag given bare (--tls-required)
    go_type: str | None = None
    go_default: str | None = None
    go_field: str | None = None
    check: Callable[[str], object] | None = None

    @property
    def key(self):
        return self.config_key or self.name.replace("-", "_")

    @property
    def dest(self):
        return (self.alias_of or self.name).replace("-", "_")

    @property
    def is_bool(self):
        """Whether the flag may be given bare, as Go's boolean flags are."""
        return self.kind == "bool" or self.bare is not None

    @property
    def field_name(self):
        return self.go_field or "".join(
            _INITIALISMS.get(word, word.capitalize()) for word in self.key.split("_"))

    def parse(self, text):
        """The value of ``text`` given on the command line, as Go's ``flag.Value.Set``
        parses it: ValueError with the reason Go gives (the flag package hides strconv's
        text behind ``parse error`` and ``value out of range``; NSQ's own Values do not)."""
        kind = self.kind
        if kind in _PARSERS:
            try:
                return _PARSERS[kind](text)
            except ValueError as exc:
                if self.go_type is not None:
                    raise
                raise ValueError("value out of range" if "out of range" in str(exc)
                                 else "parse error") from None
        if kind == "strlist":
            if self.check is not None:
                self.check(text)
            return [text]
        if kind == "floatlist":    # NSQ's FloatArray: comma-separated, fatal when not a float
            values = []
            for item in text.split(","):
                try:
                    values.append(parse_float(item))
                except ValueError:
                    raise FatalError(f"Could not parse: {item}", leveled=False) from None
            return values
        return self.checked_choice(text)

    def checked_choice(self, text):
        if self.choices and text.lower() not in self.choices:
            raise ValueError(self.choice_error(text) if self.choice_error
                             else "must be one of " + ", ".join(self.choices))
        return text

    def from_config(self, raw):
        """The value of a config-file entry, coerced as go-options does (a string is
        parsed, an integer duration is milliseconds, a list may be one string of
        comma-separated items); ValueError with go-options' reason. Where go-options would
        panic or invert, a TOML integer is taken for a float, and as a boolean it is true
        when not 0."""
        kind = self.kind
        if kind == "str":
            return self.checked_choice(format_value(raw, kind))
        if kind == "strlist":
            items = raw if isinstance(raw, list) else str(raw).split(",")
            return [format_value(item, "str") for item in items]
        if isinstance(raw, str):
            if kind == "floatlist":
                return [parse_float(item.strip()) for item in raw.split(",")]
            return _PARSERS[kind](raw)
        if kind == "floatlist" and isinstance(raw, list):
            if all(isinstance(item, (int, float)) and not isinstance(item, bool)
                   for item in raw):
                return [float(item) for item in raw]
        elif isinstance(raw, bool):
            if kind == "bool":
                return raw
        elif isinstance(raw, int):
            if kind in ("bool", "int", "float"):
                return {"bool": bool, "int": int, "float": float}[kind](raw)
            if kind == "duration":
                return raw / 1000.0
        elif isinstance(raw, float) and kind == "float":
            return raw
        raise ValueError(f"invalid {_GO_FIELD_TYPES[kind]} value type {go_type_of(raw)}")

    def usage_line(self):
        """The flag's entry in Go's usage text."""
        type_name, text = (self.go_type if self.go_type is not None
                           else "" if self.is_bool else _GO_TYPES[self.kind]), self.help
        named = re.search(r"`([^`]*)`", text)
        if named:   # Go's convention: a back-quoted word in the help names the value
            type_name = named.group(1)
            text = text[:named.start()] + type_name + text[named.end():]
        line = f"  -{self.name}" + (f" {type_name}" if type_name else "")
        line += "\t" if len(line) <= 4 else "\n    \t"
        line += text.replace("\n", "\n    \t")
        default = self.usage_default()
        return line + (f" (default {default})" if default else "")

    def usage_default(self):
        if self.go_default is not None:
            return self.go_default
        default, kind = self.default, self.kind
        if self.is_bool:
            return "true" if default in (True, "true") else ""
        if not default:
            return ""
        if kind == "str":
            return quote(default)
        if kind == "strlist":
            return ",".join(default)
        if kind == "floatlist":
            return ",".join(f"{value:f}" for value in default)
        return format_value(default, kind)


class Options:
    """Parsed option values as attributes (``opts.mem_queue_size``)."""

    def __init__(self, values):
        self.__dict__.update(values)

    def as_dict(self):
        return dict(self.__dict__)

    def __repr__(self):
        return f"Options({self.__dict__!r})"


class FlagSet:
    """The options of one program, and the Go-compatible parser for them."""

    def __init__(self, program, flags):
        self.program = program
        self.flags = {flag.name: flag for flag in flags}

    def defaults(self):
        values = {}
        for flag in self.flags.values():
            if flag.alias_of is None and not (flag.deprecated and flag.kind == "bool"):
                default = flag.default
                values[flag.dest] = list(default) if isinstance(default, list) else default
        return values

    def usage(self):
        lines = [f"Usage of {self.program}:"]
        lines.extend(self.flags[name].usage_line() for name in sorted(self.flags))
        return "\n".join(lines) + "\n"

    def fail(self, message):
        error = FlagError(message)
        error.usage = self.usage()
        return error

    def parse_args(self, argv):
        """Parse ``argv`` (without the program name).

        Returns ``(values, explicitly_set_dests, remaining_args)``; raises FlagError, or
        SystemExit(0) after printing usage for ``-h`` / ``-help``.
        """
        values, explicit = {}, set()
        args = list(argv)
        while args:
            arg = args[0]
            if len(arg) < 2 or arg[0] != "-":
                break
            args.pop(0)
            if arg == "--":
                break
            name = arg[2:] if arg.startswith("--") else arg[1:]
            if not name or name[0] in "-=":
                raise self.fail(f"bad flag syntax: {arg}")
            name, has_value, raw = name.partition("=")
            flag = self.flags.get(name)
            if flag is None:
                if name in ("h", "help"):
                    sys.stderr.write(self.usage())
                    raise SystemExit(0)
                raise self.fail(f"flag provided but not defined: -{name}")
            if flag.is_bool:
                text = raw if has_value else flag.bare or "true"
                problem = "invalid boolean value {text} for -{name}: {reason}"
            else:
                if not has_value:
                    if not args:
                        raise self.fail(f"flag needs an argument: -{name}")
                    raw = args.pop(0)
                text = raw
                problem = "invalid value {text} for flag -{name}: {reason}"
            try:
                value = flag.parse(text)
            except ValueError as exc:
                raise self.fail(problem.format(text=quote(text), name=name, reason=exc)) from None
            if flag.deprecated and flag.alias_of is None:
                continue
            if flag.kind.endswith("list"):
                values.setdefault(flag.dest, []).extend(value)
                if flag.kind == "floatlist":    # NSQ's FloatArray keeps itself sorted, largest first
                    values[flag.dest].sort(reverse=True)
            else:
                values[flag.dest] = value
            explicit.add(flag.dest)
        return values, explicit, args

    def load_config(self, path, defaults):
        """Option values from a TOML config file (keys are flag names with underscores);
        FatalError in the words of NSQ's daemons."""
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            step = "read" if isinstance(exc, IsADirectoryError) else "open"
            reason = f"{step} {path}: {(exc.strerror or str(exc)).lower()}"
            raise FatalError(f"failed to load config file {path} - {reason}") from None
        except tomllib.TOMLDecodeError as exc:
            raise FatalError(f"failed to load config file {path} - toml: {exc}") from None
        by_key = {flag.key: flag for flag in self.flags.values()}
        values = {}
        for key, raw in data.items():   # NSQ checks the keys its own flag.Values parse first
            flag = by_key.get(key)
            if flag is not None and flag.choices:
                try:
                    flag.checked_choice(format_value(raw, "str"))
                except ValueError:
                    raise FatalError(f"failed parsing {key} {format_value(raw, 'str')}") from None
        for key, raw in data.items():
            flag = by_key.get(key)
            if flag is None or (flag.deprecated and flag.alias_of is None):
                continue
            try:
                values[flag.dest] = flag.from_config(raw)
            except ValueError as exc:
                current = format_value(defaults.get(flag.dest), flag.kind)
                raise FatalError(
                    f"ERROR: Resolve failed to coerce value {format_value(raw, 'str')} "
                    f"({current}) for field {flag.field_name} - {exc}", leveled=False) from None
        return values

    def parse(self, argv):
        """Defaults, then the ``--config`` file, then the command line: an Options.

        As in NSQ's programs, ``--version`` is answered before the config file is read."""
        cli, explicit, rest = self.parse_args(argv)
        if rest:
            raise self.fail(f"unexpected argument: {rest[0]}")
        values = self.defaults()
        config_path = cli.get("config")
        if config_path and not cli.get("version"):
            values.update(self.load_config(config_path, values))
        values.update({k: v for k, v in cli.items() if k in explicit})
        return Options(values)


def parse_or_exit(parse, argv, program):
    """``parse(argv)``, reporting as NSQ's ``program`` does: a bad flag prints Go's
    message and the usage (exit 2); a config file NSQ refuses is one fatal log line, and
    so are options it refuses (``failed to instantiate <program> - ...``), exit 1."""
    try:
        return parse(argv)
    except FlagError as exc:
        sys.stderr.write(f"{exc}\n{exc.usage}")
        sys.stderr.flush()
        raise SystemExit(2) from None
    except FatalError as exc:
        exit_fatal(exc.line(program))
    except InvalidOptions as exc:
        exit_fatal(FatalError(f"failed to instantiate {program} - {exc}").line(program))
