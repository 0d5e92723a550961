"""Go's value syntaxes, read and written with Go's own error texts.

NSQ's programs parse numbers, booleans and durations with Go's ``strconv`` and ``time``
packages, and print values with ``%v`` and ``%q``; users see those texts in flag errors,
config-file errors and ``/stats``. These functions take and give the same strings:
``parse_int("0x10") == 16``, ``parse_duration("1m30s") == 90.0``, ``format_duration(90)
== "1m30s"``, and a ValueError whose message is Go's (``strconv.ParseInt: parsing "x":
invalid syntax``, ``time: unknown unit "x" in duration "1x"``).
"""

import re

from greensq.services.shared.wire import go_quote

_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6,
    "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}
_DURATION_NUMBER = re.compile(r"(\d*)(?:\.(\d*))?")
_DURATION_UNIT = re.compile(r"[^0-9.]*")
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}
_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64 = (0, (1 << 64) - 1)
_OCTAL_WITHOUT_PREFIX = re.compile(r"0[0-7_]+")
def quote(text):
    """``text`` quoted as Go's ``%q`` shows it."""
    return go_quote(str(text).encode("utf-8", "surrogateescape"))


def _syntax_error(func, text):
    return ValueError(f"strconv.{func}: parsing {quote(text)}: invalid syntax")


def _range_error(func, text):
    return ValueError(f"strconv.{func}: parsing {quote(text)}: value out of range")


def parse_int(text, base=0, unsigned=False):
    """``strconv.ParseInt(text, base, 64)`` (``ParseUint`` if ``unsigned``); base 0 takes
    decimal, ``0x``, ``0o``, ``0b`` or a leading-zero octal, with underscores between
    digits. ValueError with strconv's text."""
    func = "ParseUint" if unsigned else "ParseInt"
    sign = text[:1] if text[:1] in "+-" and not unsigned else ""
    body = text[len(sign):]
    if (not body.isascii() or body != body.strip() or body[:1] in "+-_"
            or base and "_" in body):
        raise _syntax_error(func, text)
    try:
        if not base and _OCTAL_WITHOUT_PREFIX.fullmatch(body):
            value = int(body, 8)
        else:
            value = int(body, base)
    except ValueError:
        raise _syntax_error(func, text) from None
    value = -value if sign == "-" else value
    low, high = _UINT64 if unsigned else _INT64
    if not low <= value <= high:
        raise _range_error(func, text)
    return value


def parse_float(text):
    """``strconv.ParseFloat(text, 64)``; ValueError with strconv's text."""
    body = text.lstrip("+-")
    if not body.isascii() or body != body.strip() or "_" in body or not body:
        raise _syntax_error("ParseFloat", text)
    try:
        if body[:2].lower() == "0x":
            value = float.fromhex(text)
        else:
            value = float(text)
    except (ValueError, OverflowError):
        raise _syntax_error("ParseFloat", text) from None
    if value in (float("inf"), float("-inf")) and "inf" not in body.lower():
        raise _range_error("ParseFloat", text)
    return value


def parse_bool(text):
    """``strconv.ParseBool``; ValueError with strconv's text."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _syntax_error("ParseBool", text)


def parse_duration(text):
    """``time.ParseDuration`` (``"1h2m3.5s"``, ``"250ms"``, ``"0"``) in seconds; ValueError
    with Go's text."""
    invalid = ValueError(f"time: invalid duration {quote(text)}")
    rest = text
    sign = 1.0
    if rest[:1] in ("-", "+"):
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise invalid
    total = 0.0
    while rest:
        if not (rest[0] == "." or "0" <= rest[0] <= "9"):
            raise invalid
        number = _DURATION_NUMBER.match(rest)
        whole, fraction = number.group(1), number.group(2)
        if not whole and not fraction:
            raise invalid
        rest = rest[number.end():]
        unit = _DURATION_UNIT.match(rest).group()
        if not unit:
            raise ValueError(f"time: missing unit in duration {quote(text)}")
        if unit not in _DURATION_UNITS:
            raise ValueError(f"time: unknown unit {quote(unit)} in duration {quote(text)}")
        rest = rest[len(unit):]
        total += float(f"{whole or 0}.{fraction or 0}") * _DURATION_UNITS[unit]
    return sign * total


def format_duration(seconds):
    """Seconds as Go prints a ``time.Duration`` (``1m0s``, ``250ms``, ``1h0m0s``)."""
    if seconds == 0:
        return "0s"
    if seconds < 0:
        return "-" + format_duration(-seconds)
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


def format_float(value):
    """A float as Go's ``%v`` prints it: the shortest digits, an exponent from 1e+06 up
    and below 1e-04 (``0.25``, ``1``, ``1e+06``)."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")   # repr: the shortest digits
    whole, _, fraction = mantissa.partition(".")
    whole = whole.lstrip("0")
    if whole:
        point = len(whole) - 1
    else:
        point = -(len(fraction) - len(fraction.lstrip("0"))) - 1
    point += int(exponent or 0)
    digits = (whole + fraction).strip("0")
    if point < -4 or point >= 6:
        rest = "." + digits[1:] if digits[1:] else ""
        return f"{sign}{digits[0]}{rest}e{'-' if point < 0 else '+'}{abs(point):02d}"
    if point < 0:
        return f"{sign}0.{'0' * (-point - 1)}{digits}"
    integer = digits[:point + 1].ljust(point + 1, "0")
    return sign + integer + ("." + digits[point + 1:] if digits[point + 1:] else "")


def format_value(value, kind):
    """An option's value as Go's ``%v`` prints the Go value behind it."""
    if value is None:
        return "0"
    if kind == "duration":
        return format_duration(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, list):
        return "[" + " ".join(format_value(item, kind) for item in value) + "]"
    return str(value)


def go_type_of(raw):
    """The Go type a TOML value decodes to (named in go-options' errors)."""
    for python_type, go_type in ((bool, "bool"), (int, "int64"), (float, "float64"),
                                 (str, "string"), (list, "[]interface {}"),
                                 (dict, "map[string]interface {}")):
        if isinstance(raw, python_type):
            return go_type
    return "time.Time"
