"""greensq's hot modules, compiled from their own Python source where they could be.

The modules a message's path runs through most (``MODULES``, chosen by profile: README,
"Performance") are compiled by setup.py with Cython, from the very ``.py`` file that
also runs uncompiled, into an extension beside it named with a ``_c_`` prefix
(``actors/topic.py`` -> ``greensq.actors._c_topic``), wherever greensq is installed with a
C compiler and Python's headers. A ``.pxd`` file named like the extension
(``actors/_c_topic.pxd``) may declare C types where the profile says they pay. Each of
these modules ends with

    use_compiled(globals())

which, as gevent's ``import_c_accel`` does for its hub and queues, replaces what the
module's own code just defined with what the compiled module defined: every importer then
gets the compiled classes and functions. The source runs as it is when the extension is
missing (installed without a compiler), when it is older than the source (a checkout
edited since ``pip install -e .``: a warning says so, and the install rebuilds it), or
when ``GREENSQ_PURE_PYTHON`` is set in the environment (to anything but ``0``), which also
makes the install build none.

What keeps the two builds one program:
- The compiled module runs the same last line; there ``use_compiled`` does nothing.
- Each module's state exists once, in the compiled module: the objects of the
  uncompiled run are dropped before any other module sees them, so these modules
  register nothing elsewhere while they load.
- The compiled functions read the compiled module's globals: patch a class's attribute,
  never one of these modules' globals.
"""

import importlib
import importlib.util
import logging
import os

MODULES = (
    "greensq.services.shared.wire",
    "greensq.services.shared.frames",
    "greensq.services.shared.compression",
    "greensq.services.shared.message",
    "greensq.services.shared.batches",
    "greensq.services.shared.transport",
    "greensq.actors.actor",
    "greensq.actors.client_v2",
    "greensq.actors.protocol_v2",
    "greensq.actors.topic",
    "greensq.actors.channel",
    "greensq.services.nsqd.message_queue",
    "greensq.services.nsqd.memory_first_queue",
    "greensq.services.nsqd.diskqueue",
    "greensq.services.nsqd.replication_wire",
    "greensq.services.nsqd.publish_gathering",
    "greensq.services.nsqd.nsqd",
    "greensq.http.wsgi_server",
)

PURE_PYTHON = os.environ.get("GREENSQ_PURE_PYTHON", "") not in ("", "0")

# What a module keeps of its own: its identity as the import system made it.
_OWN = frozenset(["__name__", "__file__", "__spec__", "__loader__", "__package__",
                  "__cached__", "__builtins__"])
_PREFIX = "_c_"
# An installer may write a module's source a moment after its compiled module.
_INSTALL_SKEW = 2.0   # seconds

log = logging.getLogger("greensq")


def compiled_name(module):
    """The compiled module of ``module``: ``a.b.c`` -> ``a.b._c_c``."""
    package, _, name = module.rpartition(".")
    return f"{package}.{_PREFIX}{name}"


def use_compiled(module_globals):
    """At the end of a module of MODULES: take the compiled module's definitions in place
    of the module's own, unless pure Python is asked for or the extension is missing or
    older than the source."""
    package, _, name = module_globals["__name__"].rpartition(".")
    if name.startswith(_PREFIX) or PURE_PYTHON:
        return
    compiled_module = compiled_name(module_globals["__name__"])
    if importlib.util.find_spec(compiled_module) is None:
        return
    if not _compiled_is_current(compiled_module, module_globals["__file__"]):
        log.warning("%s is older than %s: running the source (pip install -e . "
                    "compiles it again)", compiled_module, module_globals["__file__"])
        return
    compiled = importlib.import_module(compiled_module)
    module_globals.update((key, value) for key, value in vars(compiled).items()
                          if key not in _OWN)


def _compiled_is_current(compiled_module, source):
    """Whether the compiled module ``compiled_module`` (which exists) was built from the
    source as it is now, as far as the files' times tell."""
    compiled_at = os.stat(importlib.util.find_spec(compiled_module).origin).st_mtime
    return os.stat(source).st_mtime <= compiled_at + _INSTALL_SKEW


def build():
    """What this installation runs: ``"compiled"``, ``"pure Python"`` (asked for, or
    nothing was compiled) or ``"partly compiled"``. Told without importing the modules,
    so the arbiter and ``--version`` can say it too."""
    if PURE_PYTHON:
        return "pure Python"
    found = sum(importlib.util.find_spec(compiled_name(module)) is not None
                and _compiled_is_current(compiled_name(module),
                                         importlib.util.find_spec(module).origin)
                for module in MODULES)
    if found == len(MODULES):
        return "compiled"
    return "partly compiled" if found else "pure Python"
