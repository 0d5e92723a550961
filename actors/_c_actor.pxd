# Types for the compiled actors/actor.py (see services/shared/compiled.py).

cdef class Receipt:
    cdef public Py_ssize_t pending
    cdef public object error
    cdef object _event, _on_done
