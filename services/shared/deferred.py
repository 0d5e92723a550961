"""Imports whose code runs at first use: the one way greensq imports a module anywhere but
at the top of another.

A daemon is two processes (see http/launcher.py): Gunicorn's arbiter imports the
launcher, its flags and the worker class, then forks the worker, which imports gevent,
Falcon and the daemon's core. Whatever the arbiter imports, both processes hold, and the
worker copies most of it again as it touches the pages; so the arbiter's modules name the
worker's as deferred modules, at their top like any import, and the worker runs their code.
A few more wait until a feature is used (snappy, ``--config``, a ``/metrics`` scrape), so
a daemon that never uses it never pays for it. The README's architecture section lists
every deferred import, and tests/test_layout.py checks them against the layers.

    nsqd_core = deferred_import("greensq.services.nsqd.nsqd")   # at the module's top
    ...
    nsqd_core.load_nsqd(opts)                                   # runs the module's code

A deferred module is a real module object in ``sys.modules`` whose code has not run yet:
it answers what the import system reads (``__spec__``, ``__file__``, ``__path__``) and runs
its code on the first other attribute read, becoming an ordinary module. Never set an
attribute of one before reading one: its code would overwrite it. gevent, whose modules
patch each other as they load, is not deferred this way: it is imported at the top of the
modules only the worker loads. (``importlib.util.LazyLoader`` does not do here: on Python
3.11 a second ``import`` of a lazy module reads its ``__spec__``, and that loads it.)
"""

import importlib.util
import sys
import threading
import types

_loading = threading.RLock()


class DeferredModule(types.ModuleType):
    """A module whose code has not run yet; it runs on the first attribute it lacks."""

    def __getattr__(self, name):
        with _loading:   # another thread may be running the code: wait for it
            if type(self) is DeferredModule:
                self.__class__ = types.ModuleType   # from now on an ordinary module
                self.__spec__.loader.exec_module(self)
        return getattr(self, name)


def deferred_import(name, optional=False):
    """The module ``name``, its code run at first use (at once if it was imported already).
    A missing module raises ``ModuleNotFoundError``, or gives None when ``optional``."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.find_spec(name)
    if spec is None:
        if optional:
            return None
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    if not hasattr(spec.loader, "exec_module"):
        return importlib.import_module(name)
    module = importlib.util.module_from_spec(spec)
    module.__class__ = DeferredModule
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module
