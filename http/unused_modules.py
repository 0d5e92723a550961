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

``importlib.util.LazyLoader`` does not do here: on Python 3.11 a second ``import`` of a
lazy module reads its ``__spec__``, and that loads it. A deferred module answers the
attributes the import system reads (``__spec__``, ``__file__``...) and loads on any other.
"""

import importlib.util
import sys
import threading
import types

UNUSED = ("importlib.metadata", "email.utils", "html", "argparse", "glob", "logging.handlers",
          "xml.etree.ElementTree", "urllib.request", "email.parser", "email.feedparser",
          "email.header", "email.quoprimime", "email.base64mime", "bz2", "lzma", "locale")

_loading = threading.RLock()


class DeferredModule(types.ModuleType):
    """A module whose code has not run yet; it runs on the first attribute it lacks."""

    def __getattr__(self, name):
        with _loading:   # another thread may be running the code: wait for it
            if type(self) is DeferredModule:
                self.__class__ = types.ModuleType   # from now on an ordinary module
                self.__spec__.loader.exec_module(self)
        return getattr(self, name)


def defer_unused_modules(names=UNUSED):
    """Defer each of ``names`` not imported yet; call before importing Gunicorn."""
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            continue
        module = importlib.util.module_from_spec(spec)
        module.__class__ = DeferredModule
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
