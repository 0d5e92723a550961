"""What nsqd's and nsqlookupd's HTTP APIs answer, parsed without I/O: shared by the
gevent HTTP clients (:mod:`.http`) and the asyncio consumer's lookupd queries."""

import json
from dataclasses import dataclass, field

from .errors import NSQError


class HTTPError(NSQError):
    """A non-2xx answer. ``status`` is the HTTP status, ``message`` NSQ's error text."""

    def __init__(self, status, message, body=b""):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.body = body


def checked(status, body):
    """``body`` of a 2xx answer; any other raises :class:`HTTPError`."""
    if 200 <= status < 300:
        return body
    try:
        message = json.loads(body)["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace").strip()
    raise HTTPError(status, message, body)


@dataclass
class Node:
    """An nsqd as nsqlookupd describes it."""

    broadcast_address: str
    tcp_port: int
    http_port: int
    hostname: str = ""
    remote_address: str = ""
    version: str = ""
    tombstones: list = field(default_factory=list)
    topics: list = field(default_factory=list)

    @classmethod
    def from_json(cls, data):
        return cls(data.get("broadcast_address", ""), int(data.get("tcp_port", 0)),
                   int(data.get("http_port", 0)), data.get("hostname", ""),
                   data.get("remote_address", ""), data.get("version", ""),
                   data.get("tombstones") or [], data.get("topics") or [])

    @property
    def tcp_address(self):
        return f"{self.broadcast_address}:{self.tcp_port}"

    @property
    def http_address(self):
        return f"{self.broadcast_address}:{self.http_port}"


@dataclass
class Lookup:
    """The answer of ``/lookup``: the topic's channels and the nsqd that have it."""

    channels: list
    producers: list

    @classmethod
    def from_json(cls, data):
        data = data if isinstance(data, dict) else {}
        return cls(list(data.get("channels") or []),
                   [Node.from_json(p) for p in data.get("producers") or []])
