"""The worker's gevent side: the standard library patched for the hub, the hub made anew
after the fork, and the HTTP servers' pool. Only the worker loads this module
(worker.py names it deferred), after the fork: Gunicorn imports the worker class in the
arbiter, which must not hold gevent.
"""

import mimetypes

import gevent
from gevent import events, hub, monkey
from gevent.event import Event
from gevent.pool import Pool

from greensq.http.idle_spin import IdleSpin

from greensq.services.shared.deferred import deferred_import

# Its module's imports (the standard library's socket among them) run once patched.
wsgi_server = deferred_import("greensq.http.wsgi_server")

sleep = gevent.sleep
spawn = gevent.spawn


def monkey_patch():
    """gevent's ``patch_all()`` without its plugin lookup.

    Around every module it patches, gevent looks for plugins among the entry points of
    every installed distribution: 25 reads of all the package metadata, about 0.1 s of
    CPU and 2 MB at each worker start. The daemons use no gevent plugins; subscribers
    registered in code (``zope.event``) are still notified. The daemons start no
    processes either, so ``subprocess`` stays unpatched (and gevent's copy unloaded).
    """
    events.notify_and_call_entry_points = events.notify
    monkey.patch_all(subprocess=False)


def reinit_hub():
    """The hub's event loop made anew in the forked worker."""
    hub.reinit()


def use_builtin_mime_types():
    """Falcon's App copies mimetypes' table (for static routes); Python's own table is
    enough for the daemons (nsqadmin serves .css and .js), and reading the system's
    mime.types would cost 0.4 MB and 2 ms. ``init()`` reads every file of ``knownfiles``
    (``init(files=[])`` too), so the list is emptied first."""
    mimetypes.knownfiles = []
    mimetypes.init()


def stop_event():
    return Event()


def http_server(listener, app, connections, max_body, accept_share=None):
    """The HTTP server over ``listener``, at most ``connections`` requests at a time;
    ``accept_share``: other processes accept on it too (see accept_share.py)."""
    return wsgi_server.ApiServer(listener, app, spawn=Pool(connections), max_body=max_body,
                                 accept_share=accept_share)



def spin_when_idle(window):
    """The hub keeps polling for ``window`` seconds after its last work (idle_spin.py)."""
    return IdleSpin(window)
