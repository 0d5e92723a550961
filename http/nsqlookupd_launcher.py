"""``nsqlookupd``: the command that starts greensq's nsqlookupd with NSQ's flags.

In the worker it builds the registration DB and serves the V1 TCP protocol (nsqd
announcements) beside the Falcon app (discovery and administration). nsqlookupd keeps no
data, so there is nothing to lock or flush.
"""

from greensq.http.daemon_spec import ProtocolDaemonSpec
from greensq.http.launcher import daemon_main
from greensq.services.nsqlookupd.options import parse_nsqlookupd_options
from greensq.services.shared.deferred import deferred_import

# The worker's (launcher.py says why), loaded after the fork.
nsqlookupd_app = deferred_import("greensq.http.nsqlookupd_app")
nsqlookupd_core = deferred_import("greensq.services.nsqlookupd.nsqlookupd")


class NsqlookupdSpec(ProtocolDaemonSpec):
    name = "nsqlookupd"
    graceful_timeout = 5

    def build_core(self):
        return nsqlookupd_core.NSQLookupd(self.opts)

    def create_app(self, core):
        return nsqlookupd_app.create_app(core)


def main(argv=None):
    daemon_main(NsqlookupdSpec, parse_nsqlookupd_options, argv)


if __name__ == "__main__":
    main()
