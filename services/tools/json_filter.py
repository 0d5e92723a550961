"""nsq_to_nsq's JSON filters: ``--require-json-field``, ``--require-json-value`` and
``--whitelist-json-field``, with NSQ's rules and NSQ's output bytes.

* A message that is not a JSON object is dropped (logged, FINished).
* ``--require-json-field F``: messages without ``F`` are dropped. With
  ``--require-json-value V`` as well, ``F`` must equal ``V``: a string compares as a
  string; otherwise, if ``V`` reads as a number, a number compares numerically; anything
  else never matches. A message *missing* ``F`` when a value is required is an error:
  logged and requeued with backoff, as NSQ does.
* ``--whitelist-json-field`` (repeatable): the relayed message keeps only those fields,
  re-encoded as Go's ``encoding/json`` does (keys sorted, no spaces, numbers as Go prints
  float64, integral top-level numbers as integers, ``<``, ``>``, ``&`` escaped), so the
  bytes match what Go's nsq_to_nsq relays.
"""

import json
import math
from decimal import Decimal

PASS, DROP, BACKOFF = "pass", "drop", "backoff"


def decode_object(body):
    """The message as a JSON object with every number a float (as Go decodes into
    ``interface{}``), or None if it is not one."""
    try:
        value = json.loads(body, parse_int=float)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class JsonFilter:
    def __init__(self, require_field, require_value, whitelist):
        self.require_field = require_field
        self.require_value = require_value
        self.whitelist = list(whitelist)
        try:
            self.require_number = float(require_value) if require_value else None
        except ValueError:
            self.require_number = None

    @property
    def active(self):
        return bool(self.require_field or self.whitelist)

    def verdict(self, obj):
        """PASS, DROP or BACKOFF for a decoded message."""
        if not self.require_field:
            return PASS
        if self.require_field not in obj:
            return BACKOFF if self.require_value else DROP
        if not self.require_value:
            return PASS
        value = obj[self.require_field]
        if isinstance(value, str):
            return PASS if value == self.require_value else DROP
        if self.require_number is not None and isinstance(value, float) \
                and value == self.require_number:
            return PASS
        return DROP

    def rewrite(self, obj, body):
        """The body to relay: unchanged, or only the whitelisted fields."""
        if not self.whitelist:
            return body
        kept = {}
        for key in self.whitelist:
            if key in obj:
                value = obj[key]
                if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 63:
                    value = int(value)
                kept[key] = value
        return go_json(kept).encode()


def _go_float(value):
    """A float64 as Go's encoding/json writes it."""
    if value == 0:
        return "0" if math.copysign(1, value) > 0 else "-0"
    if 1e-6 <= abs(value) < 1e21:
        text = format(Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    text = repr(value)
    mantissa, _, exponent = text.partition("e")
    sign = exponent[0] if exponent[0] in "+-" else "+"
    digits = exponent.lstrip("+-").lstrip("0") or "0"
    return f"{mantissa}e{sign}{digits.zfill(2) if sign == '+' else digits.zfill(1)}"


def _go_string(text):
    encoded = json.dumps(text, ensure_ascii=False)
    return (encoded.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def go_json(value):
    """``value`` encoded as Go's ``json.Marshal`` encodes the equivalent Go value."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return _go_string(value)
    if isinstance(value, list):
        return "[" + ",".join(go_json(item) for item in value) + "]"
    return "{" + ",".join(f"{_go_string(k)}:{go_json(value[k])}" for k in sorted(value)) + "}"
