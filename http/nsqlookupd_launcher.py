"""``nsqlookupd``: the command that starts greensq's nsqlookupd with NSQ's flags.

In the worker it builds the registration DB and serves the V1 TCP protocol (nsqd
announcements) beside the Falcon app (discovery and administration). nsqlookupd keeps no
data, so there is nothing to lock or flush.
"""

from greensq.http.daemon_spec import ProtocolDaemonSpec
from greensq.http.launcher import daemon_main
from greensq.services.nsqlookupd.options import parse_nsqlookupd_options


class NsqlookupdSpec(ProtocolDaemonSpec):
    name = "nsqlookupd"
    graceful_timeout = 5

    def build_core(self):
        from greensq.services.nsqlookupd.nsqlookupd import NSQLookupd

        return NSQLookupd(self.opts)

    def create_app(self, core):
        from greensq.http.nsqlookupd_app import create_app

        return create_app(core)

    def protocols(self):
        from greensq.actors.lookup_session import LookupSession
        from greensq.services.shared.wire import MAGIC_V1

        def serve_v1(sock, address):
            LookupSession(self.core, sock, address).run()

        return {MAGIC_V1: serve_v1}


def main(argv=None):
    daemon_main(NsqlookupdSpec, parse_nsqlookupd_options, argv)


if __name__ == "__main__":
    main()
