"""``gunicorn -k gevent 'greensq.http.nsqadmin_app:app'``: nsqadmin served by Gunicorn
itself, its flags in ``NSQADMIN_OPTS`` (see ``standalone_app`` in nsqadmin_launcher.py).
``app`` is built when Gunicorn first reads it, inside its worker; nsqadmin's API and pages
are nsqadmin_api.py.
"""

from greensq.http.nsq_http import lazy_app
from greensq.http.nsqadmin_launcher import standalone_app

__getattr__ = lazy_app(globals(), standalone_app)
