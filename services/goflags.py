"""Command-line and config-file options, parsed the way NSQ's Go daemons parse them.

Existing init scripts, systemd units and client test harnesses start nsqd with every
spelling Go's ``flag`` package accepts, so this parser accepts exactly those:

* ``-name value``, ``--name value``, ``-name=value``, ``--name=value``;
* booleans as bare ``-name`` or ``-name=false`` (never ``-name false``);
* parsing stops at the first non-flag argument or at ``--``;
* repeatable flags (``--lookupd-tcp-address``) collect every value.

``--config`` names a TOML file whose keys are the flag names with underscores. A flag
given on the command line wins over the file. Durations are Go durations (``"1m30s"``) or,
in the config file, integers meaning milliseconds.
"""

import json
import re
import sys
from dataclasses import dataclass, field

_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6,
    "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


def _quote(value):
    """``value`` quoted as Go's ``%q`` does (double quotes), for error messages."""
    return json.dumps(str(value), ensure_ascii=False)


class FlagError(ValueError):
    """A bad command line or config value; the message is what Go's flag package says."""


def parse_duration(text):
    """A Go duration string (``"1h2m3.5s"``, ``"250ms"``, ``"0"``) in seconds."""
    text = text.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    total, pos = 0.0, 0
    for match in _DURATION_PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise FlagError(f"time: invalid duration {_quote(text)}")
    return sign * total


def format_duration(seconds):
    """Seconds as Go prints a ``time.Duration`` (``1m0s``, ``250ms``, ``1h0m0s``)."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        for unit, scale in (("ms", 1e-3), ("\u00b5s", 1e-6), ("ns", 1e-9)):
            if seconds >= scale:
                return f"{seconds / scale:g}{unit}"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:g}s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


def parse_bool(text):
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise FlagError(f"strconv.ParseBool: parsing {_quote(text)}: invalid syntax")


@dataclass
class Flag:
    """One option: its flag name (dashes), kind, default and help text.

    ``kind`` is one of ``str``, ``int``, ``float``, ``bool``, ``duration``, ``strlist``,
    ``floatlist``. A deprecated flag with ``alias_of`` sets that option instead; one without
    is accepted and ignored.
    """

    name: str
    kind: str
    default: object
    help: str
    deprecated: bool = False
    alias_of: str | None = None
    choices: tuple = field(default=())
    config_key: str | None = None   # the TOML key, where NSQ's differs from the flag name
    bare: str | None = None         # value of a non-bool flag given bare (--tls-required)

    @property
    def key(self):
        return self.config_key or self.name.replace("-", "_")

    @property
    def dest(self):
        return (self.alias_of or self.name).replace("-", "_")

    def convert(self, raw, from_config=False):
        """Turn a command-line string (or a TOML value) into the option's Python value."""
        kind = self.kind
        try:
            if kind == "bool":
                return raw if isinstance(raw, bool) else parse_bool(str(raw))
            if kind == "int":
                return int(raw)
            if kind == "float":
                return float(raw)
            if kind == "duration":
                if from_config and isinstance(raw, (int, float)) and not isinstance(raw, bool):
                    return raw / 1000.0
                return parse_duration(str(raw))
            if kind == "strlist":
                return [str(x) for x in (raw if isinstance(raw, list) else [raw])]
            if kind == "floatlist":    # Go's FloatArray: comma-separated, repeatable
                items = raw if isinstance(raw, list) else str(raw).split(",")
                return [float(x) for x in items]
            value = str(raw)
        except (TypeError, ValueError) as exc:
            raise FlagError(f"invalid value {_quote(raw)} for flag -{self.name}: {exc}") from None
        if self.choices and value.lower() not in self.choices:
            raise FlagError(
                f"invalid value {_quote(raw)} for flag -{self.name}: must be one of "
                + ", ".join(self.choices))
        return value


class Options:
    """Parsed option values as attributes (``opts.mem_queue_size``)."""

    def __init__(self, values):
        self.__dict__.update(values)

    def as_dict(self):
        return dict(self.__dict__)

    def __repr__(self):
        return f"Options({self.__dict__!r})"


class FlagSet:
    """The options of one daemon, and the Go-compatible parser for them."""

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
        for name in sorted(self.flags):
            flag = self.flags[name]
            kind = "" if flag.kind == "bool" else f" {flag.kind}"
            lines.append(f"  -{name}{kind}")
            default = flag.default
            if flag.kind == "duration" and isinstance(default, (int, float)):
                default = format_duration(default)
            suffix = f" (default {default!r})" if default not in (None, "", [], False, 0) else ""
            lines.append(f"    \t{flag.help}{suffix}")
        return "\n".join(lines) + "\n"

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
                raise FlagError(f"bad flag syntax: {arg}")
            name, has_value, raw = name.partition("=")
            if name in ("h", "help"):
                sys.stderr.write(self.usage())
                raise SystemExit(0)
            flag = self.flags.get(name)
            if flag is None:
                raise FlagError(f"flag provided but not defined: -{name}")
            if flag.kind == "bool":
                value = flag.convert(raw) if has_value else True
            elif flag.bare is not None and not has_value:
                value = flag.convert(flag.bare)
            else:
                if not has_value:
                    if not args:
                        raise FlagError(f"flag needs an argument: -{name}")
                    raw = args.pop(0)
                value = flag.convert(raw)
            if flag.deprecated and flag.alias_of is None:
                continue
            if flag.kind.endswith("list"):
                values.setdefault(flag.dest, []).extend(value)
                if flag.kind == "floatlist":    # Go's FloatArray keeps itself sorted, largest first
                    values[flag.dest].sort(reverse=True)
            else:
                values[flag.dest] = value
            explicit.add(flag.dest)
        return values, explicit, args

    def load_config(self, path):
        """Option values from a TOML config file (keys are flag names with underscores)."""
        import tomllib   # only with --config: every daemon's arbiter parses flags

        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise FlagError(f"failed to load config file {path} - {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise FlagError(f"failed to parse config file {path} - {exc}") from None
        by_key = {flag.key: flag for flag in self.flags.values()}
        values = {}
        for key, raw in data.items():
            flag = by_key.get(key)
            if flag is None or (flag.deprecated and flag.alias_of is None):
                continue
            values[flag.dest] = flag.convert(raw, from_config=True)
        return values

    def parse(self, argv):
        """Defaults, then the ``--config`` file, then the command line: an Options."""
        cli, explicit, rest = self.parse_args(argv)
        if rest:
            raise FlagError(f"unexpected argument: {rest[0]}")
        values = self.defaults()
        config_path = cli.get("config")
        if config_path:
            values.update(self.load_config(config_path))
        values.update({k: v for k, v in cli.items() if k in explicit})
        return Options(values)
