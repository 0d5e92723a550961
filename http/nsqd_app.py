"""``gunicorn -k gevent 'greensq.http.nsqd_app:app'``: nsqd served by Gunicorn itself, its
flags in ``NSQD_OPTS`` (see ``standalone_app`` in nsqd_launcher.py). ``app`` is built when
Gunicorn first reads it, inside its worker; nsqd's API itself is nsqd_api.py.
"""

from greensq.http.nsq_http import lazy_app
from greensq.http.nsqd_launcher import standalone_app

__getattr__ = lazy_app(globals(), standalone_app)
