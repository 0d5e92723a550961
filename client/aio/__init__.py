"""greensq.client.aio: the NSQ client for asyncio programs (FastAPI, aiohttp, anything
under uvicorn), with the gevent client's Producer and Consumer, options and typed errors::

    from greensq.client import aio

    async def main():
        async with aio.Producer(["127.0.0.1:4150"]) as producer:
            await producer.publish("events", b"hello")

    aio.run(main())

Both clients speak through the same protocol core (:mod:`greensq.client.protocol`) and
decide RDY and backoff with the same code (:mod:`greensq.client.consumer_core`). Nothing
here imports gevent. It runs on whatever loop is running; :func:`run` picks uvloop when
it is installed and asyncio's own loop otherwise.
"""

import asyncio

from .. import errors
from ..errors import *  # noqa: F401,F403 - the typed errors are part of the API
from ..message import Message
from .connection import Connection
from .consumer import Consumer
from .producer import Producer

try:
    import uvloop
except ImportError:     # optional: asyncio's own loop then
    uvloop = None

__all__ = ["Connection", "Consumer", "Message", "Producer", "run"] + errors.__all__


def run(main):
    """Run coroutine ``main`` to its end on a new event loop (uvloop's when installed),
    as :func:`asyncio.run` does; returns its result."""
    if uvloop is not None:
        return uvloop.run(main)
    return asyncio.run(main)
