"""nsqlookupd's ``/lookup`` on asyncio, for the consumer's discovery.

One HTTP/1.0 GET on its own connection (nsqlookupd answers and closes), read to the end
within a size bound; the answer is parsed by :mod:`..http_answers`, as the gevent
client's is.
"""

import asyncio
import json
import urllib.parse

from ..http_answers import Lookup, checked
from ..protocol import parse_address

MAX_ANSWER = 16 * 1024 * 1024     # far more than any topic's list of nsqd


async def lookup(address, topic, timeout=5.0):
    """The :class:`~greensq.client.http.Lookup` of ``topic`` at nsqlookupd ``address``;
    raises HTTPError (404 TOPIC_NOT_FOUND when no nsqd has it), OSError or ValueError."""
    host, port = parse_address(address)
    path = "/lookup?" + urllib.parse.urlencode({"topic": topic})
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
            chunks, size = [], 0
            while chunk := await reader.read(65536):
                size += len(chunk)
                if size > MAX_ANSWER:
                    raise ValueError(f"lookupd {address}: answer over {MAX_ANSWER} bytes")
                chunks.append(chunk)
        finally:
            writer.close()
    status, body = _split(b"".join(chunks))
    body = checked(status, body)
    return Lookup.from_json(json.loads(body) if body else None)


def _split(answer):
    """``(status, body)`` of an HTTP/1.x answer read to its end."""
    head, separator, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if not separator or len(status_line) < 2 or not status_line[1].isdigit():
        raise ValueError(f"not an HTTP answer: {answer[:60]!r}")
    return int(status_line[1]), body
