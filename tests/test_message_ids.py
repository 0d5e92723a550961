"""Message IDs: 16 lower-case hex digits, unique and increasing within a batch and across
batches, shaped like NSQ's (milliseconds since 2010, the node ID, a sequence), whichever
way a batch falls across a 4096-value boundary of the sequence."""

import time

from greensq.services.shared.message import IdGenerator

HEX = set(b"0123456789abcdef")


def as_int(msg_id):
    return int(msg_id, 16)


def test_batches_are_consecutive_hex_values_across_sequence_boundaries():
    generator = IdGenerator(node_id=617)
    now = time.time_ns()
    previous = None
    for count in (1, 200, 4095, 1, 4097, 9000, 3):
        ids = generator.next_ids(count, now)
        assert len(ids) == count
        assert all(len(msg_id) == 16 and set(msg_id) <= HEX for msg_id in ids)
        values = [as_int(msg_id) for msg_id in ids]
        assert values == list(range(values[0], values[0] + count))
        if previous is not None:
            assert values[0] == previous + 1   # the same millisecond keeps counting
        previous = values[-1]


def test_an_id_carries_the_time_and_the_node():
    generator = IdGenerator(node_id=617)
    now = time.time_ns()
    value = as_int(generator.next_id(now))
    assert (value >> 12) & 0x3ff == 617
    assert (value >> 22) == now // 1_000_000 - IdGenerator._EPOCH_MS
    assert as_int(generator.next_ids(1, now)[0]) == value + 1
