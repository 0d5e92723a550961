"""Version numbers: greensq's own, and the NSQ protocol release it implements.

Clients gate features on the NSQ version nsqd reports (IDENTIFY, /info, --version), so
that number tracks the NSQ release whose behaviour greensq matches, not greensq's.
"""

from greensq.services.shared.compiled import build

__version__ = "0.1.0"
NSQ_VERSION = "1.3.0"


def version_banner(daemon):
    """The ``--version`` line, also logged at start, e.g. ``nsqd v1.3.0 (built
    w/greensq-0.1.0-compiled)``: greensq's release, and whether its hot modules run
    compiled or as pure Python (services/shared/compiled.py). Shaped as Go's ``(built
    w/go1.21.5)``, one word of ``[a-z0-9.-]``: clients parse it (gnsq's test servers read
    the version from it)."""
    return f"{daemon} v{NSQ_VERSION} (built w/greensq-{__version__}-{build_word()})"


def build_word():
    """The build as one word of the banner: ``compiled``, ``pure-python`` or
    ``partly-compiled``."""
    return build().lower().replace(" ", "-")
