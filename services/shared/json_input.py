"""JSON read from other programs, decoded as Go's encoding/json decodes it.

Clients (IDENTIFY), whatever connects to nsqlookupd, auth servers, and the nodes and
graphite servers nsqadmin asks send JSON whose strings may hold what UTF-8 cannot carry:
invalid byte sequences, or escapes of lone UTF-16 surrogates (``"h\\udfff"``). Go's
decoder turns both into U+FFFD, so a Go daemon never holds text it cannot write.
``loads`` does the same where such JSON enters greensq: what the daemons hold is then
valid Unicode, and every output (JSON, text, HTML, logs, metrics) can encode it.
"""

import re

import ujson

# A \u escape of a UTF-16 surrogate: only then can a decoded string hold a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

GO_INT_MIN, GO_INT_MAX = -(1 << 63), (1 << 63) - 1


def loads(data):
    """The document in ``data`` (bytes or str); ValueError if it is not JSON or nests
    deeper than ujson's 1,024 levels (Go's limit is 10,000). Invalid UTF-8 and lone
    surrogates in strings and keys become U+FFFD, one per invalid byte or escape."""
    if isinstance(data, str):
        text = data
    else:
        data = bytes(data)
        try:
            text = data.decode("utf-8")    # strict: refuses encoded surrogates too
        except UnicodeDecodeError:
            text = data = data.decode("utf-8", "replace")
    doc = ujson.loads(data)                # (ujson reads UTF-8 bytes fastest)
    if _SURROGATE_ESCAPE.search(text):
        doc = _replace_lone_surrogates(doc)
    return doc


def decodes_as(value, kind):
    """True if Go decodes the JSON ``value`` into a struct field of ``kind`` (str, int,
    bool, list, dict). An ``int`` field has 64 bits and takes no boolean; a value that
    does not fit fails the whole document in Go."""
    if kind is int:
        return (isinstance(value, int) and not isinstance(value, bool)
                and GO_INT_MIN <= value <= GO_INT_MAX)
    return isinstance(value, kind)


def kind_name(value):
    """A JSON value's kind as Go's decoder names it in its errors."""
    return {dict: "object", list: "array", str: "string", bool: "bool"}.get(type(value), "number")


def _text(value):
    return _LONE_SURROGATE.sub("\ufffd", value)


def _replace_lone_surrogates(doc):
    """``doc`` with U+FFFD for every lone surrogate (valid pairs were joined by ujson).
    Walks with a stack, not recursion: the document may nest deeper than Python's
    recursion limit."""
    if isinstance(doc, str):
        return _text(doc)
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            items = [(_text(key), value) for key, value in node.items()]
            node.clear()
            node.update(items)          # a repaired key that collides: the later one wins
            pairs = node.items()
        else:
            pairs = enumerate(node)
        for key, value in list(pairs):
            if isinstance(value, str):
                node[key] = _text(value)
            elif isinstance(value, (dict, list)):
                stack.append(value)
    return doc
