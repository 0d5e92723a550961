# Types for the compiled services/shared/wire.py (see services/shared/compiled.py).

cdef class StreamReader:
    cdef public object on_idle, sock
    cdef public Py_ssize_t chunk_size
    cdef bytearray _buf
    cdef Py_ssize_t _pos
    cdef object _recv_nowait
