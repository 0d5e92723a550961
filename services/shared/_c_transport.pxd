# Types for the compiled services/shared/transport.py (see services/shared/compiled.py).

cdef class PlainTransport:
    cdef public object sock
    cdef object _os_socket, _unread, _readable, _wait
