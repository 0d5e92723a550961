# Types for the compiled services/shared/message.py (see services/shared/compiled.py).
# A message is a struct of object fields: the same fields as its __slots__, read and
# written in place by the compiled code.

cdef class Message:
    cdef public object id, body, timestamp, attempts, defer_ms
    cdef public object owner, delivered_at, deadline, timeout_bucket, entry

cdef class IdGenerator:
    cdef long long _node_bits
    cdef long long _last
