"""Standard-library modules the daemons' dependencies import but a daemon never uses,
deferred: each runs its code the first time one of its attributes is read.

Gunicorn imports ``importlib.metadata`` (for ``egg:`` application URIs; it pulls in the
email package, zipfile and calendar), ``email.utils`` (the Date header of Gunicorn's own
HTTP responses), ``html`` (its error pages), ``argparse`` (its command line) and ``glob``
(its reload option) at module level, and ``logging.config`` imports ``logging.handlers``
(with pickle). Falcon imports ``xml.etree.ElementTree`` to render errors as XML for clients
that ask for it, and ``http.cookiejar`` (for a type annotation) imports ``urllib.request``
and ``http.client``: that one parses headers with ``email.parser``, and its email messages
encode headers with ``email.header``, ``email.quoprimime`` and ``email.base64mime``.
``shutil`` imports ``bz2`` and ``lzma`` only to learn whether they exist, and
``subprocess`` (through asyncio) imports ``locale``. A daemon runs none of that code at
start, yet the arbiter would hold it, and the worker, which touches most pages it shares
with the arbiter, would copy much of it again: about 3 MB of PSS in all. Running the
modules' code would also cost a start about 4 ms of CPU.
"""

from greensq.services.shared.deferred import deferred_import

UNUSED = ("importlib.metadata", "email.utils", "html", "argparse", "glob", "logging.handlers",
          "xml.etree.ElementTree", "urllib.request", "email.parser", "email.feedparser",
          "email.header", "email.quoprimime", "email.base64mime", "bz2", "lzma", "locale")


def defer_unused_modules(names=UNUSED):
    """Defer each of ``names`` not imported yet (services/shared/deferred.py); call before
    importing Gunicorn."""
    for name in names:
        deferred_import(name, optional=True)
