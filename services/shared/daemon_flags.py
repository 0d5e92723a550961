"""The flags every NSQ daemon has, with NSQ's names, types and texts."""

from greensq.services.shared.goflags import Flag

LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")


def log_level_flag():
    """``--log-level``, which NSQ's daemons parse with a flag.Value of their own."""
    return Flag("log-level", "str", "info",
                "set log verbosity: debug, info, warn, error, or fatal", choices=LOG_LEVELS,
                choice_error=lambda text: f"invalid log level '{text}' "
                                          "(debug, info, warn, error, fatal)",
                go_type="value", go_default="INFO")


def daemon_flags(daemon):
    """The flags every NSQ daemon has: ``--config``, ``--version``, ``--log-level``,
    ``--log-prefix`` (``[daemon] ``) and the deprecated ``--verbose``."""
    return [
        Flag("config", "str", "", "path to config file"),
        Flag("version", "bool", False, "print version string"),
        log_level_flag(),
        Flag("log-prefix", "str", f"[{daemon}] ", "log message prefix"),
        Flag("verbose", "bool", False, "[deprecated] has no effect, use --log-level",
             deprecated=True),
    ]
