"""Typed errors for NSQ error frames, and the client's own failures.

nsqd answers a bad command with an error frame whose text is ``<CODE> <description>``.
Applications want to catch "the topic name was rejected" without parsing strings, so each
code gets its own class; :func:`error_from_frame` builds the right one from the frame text.

``fatal`` says whether nsqd closes the connection after the error. In NSQ 1.x only
``E_FIN_FAILED``, ``E_REQ_FAILED`` and ``E_TOUCH_FAILED`` leave it open.

The classes derive from the server's :class:`greensq.services.shared.wire.ClientError`, so code
and description mean the same thing on both sides of the wire.
"""

from greensq.services.shared.wire import ClientError


class NSQError(Exception):
    """Base of every error this client raises."""


class ConnectionClosedError(NSQError):
    """The connection to nsqd closed before the command was answered."""


class NoConnectionsError(NSQError):
    """No nsqd could be reached (a publish had nowhere to go)."""


class NSQTimeoutError(NSQError):
    """nsqd did not answer in time."""


class FrameError(ConnectionClosedError):
    """nsqd sent bytes that are not NSQ's protocol (a frame of impossible size, a
    corrupt compressed stream, an answer out of place); the connection is closed."""


class ProtocolError(NSQError, ClientError):
    """An error frame from nsqd. ``code`` is e.g. ``E_BAD_TOPIC``; ``fatal`` is whether
    nsqd closed the connection after sending it."""

    code_name = None
    fatal = True

    def __init__(self, code, description=""):
        ClientError.__init__(self, code, description)

    def __str__(self):
        return ClientError.__str__(self)


def _define(code, fatal=True, doc=None):
    name = "".join(part.capitalize() for part in code[2:].split("_")) + "Error"
    cls = type(name, (ProtocolError,), {
        "code_name": code, "fatal": fatal,
        "__doc__": doc or f"nsqd answered ``{code}``.",
        "__module__": __name__,
    })
    return cls


InvalidError = _define("E_INVALID", doc="A command was malformed or not allowed now.")
BadBodyError = _define("E_BAD_BODY", doc="A command body was malformed or too big.")
BadTopicError = _define("E_BAD_TOPIC", doc="The topic name is not valid.")
BadChannelError = _define("E_BAD_CHANNEL", doc="The channel name is not valid.")
BadMessageError = _define("E_BAD_MESSAGE", doc="A message was empty or too big.")
PubFailedError = _define("E_PUB_FAILED")
MpubFailedError = _define("E_MPUB_FAILED")
DpubFailedError = _define("E_DPUB_FAILED")
FinFailedError = _define("E_FIN_FAILED", fatal=False,
                         doc="FIN of a message that is not (or no longer) in flight.")
ReqFailedError = _define("E_REQ_FAILED", fatal=False,
                         doc="REQ of a message that is not (or no longer) in flight.")
TouchFailedError = _define("E_TOUCH_FAILED", fatal=False,
                           doc="TOUCH of a message that is not (or no longer) in flight.")
SubFailedError = _define("E_SUB_FAILED")
IdentifyFailedError = _define("E_IDENTIFY_FAILED")
AuthDisabledError = _define("E_AUTH_DISABLED")
AuthFailedError = _define("E_AUTH_FAILED")
AuthFirstError = _define("E_AUTH_FIRST")
AuthErrorError = _define("E_AUTH_ERROR")
UnauthorizedError = _define("E_UNAUTHORIZED")
TooManyChannelConsumersError = _define("E_TOO_MANY_CHANNEL_CONSUMERS")

# E_AUTH_ERROR reads badly as AuthErrorError; offer the natural name too.
AuthError = AuthErrorError

ERRORS = {cls.code_name: cls for cls in (
    InvalidError, BadBodyError, BadTopicError, BadChannelError, BadMessageError,
    PubFailedError, MpubFailedError, DpubFailedError, FinFailedError, ReqFailedError,
    TouchFailedError, SubFailedError, IdentifyFailedError, AuthDisabledError,
    AuthFailedError, AuthFirstError, AuthErrorError, UnauthorizedError,
    TooManyChannelConsumersError,
)}


def error_from_frame(data):
    """The typed error for the text of an error frame (bytes or str).

    An unknown code still gives a :class:`ProtocolError` carrying that code, fatal, as
    nsqd closes the connection after any error it does not list as non-fatal.
    """
    text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else data
    code, _, description = text.partition(" ")
    cls = ERRORS.get(code)
    if cls is None:
        return ProtocolError(code, description)
    return cls(code, description)


__all__ = ["NSQError", "ConnectionClosedError", "NoConnectionsError", "NSQTimeoutError",
           "FrameError", "ProtocolError", "ERRORS", "error_from_frame", "AuthError"] + [
    cls.__name__ for cls in ERRORS.values()]
