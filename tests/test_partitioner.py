"""Known answers for the partitioner contract: ``mmh3.hash(key_bytes, signed=False) % P``.

The hashes of the first three keys are MurmurHash3_x86_32 (seed 0) reference values
published with the algorithm; the partitions are those hashes reduced by hand. The rest
pin the Avro bytes of typical keys, so a change of key encoding or hash shows up here
rather than as data that silently moves between partitions.
"""

from __future__ import annotations

import pytest

from venice.partitioner import partition_for, partitions_for
from venice.schema import AvroCodec

# (key bytes, P, partition)
KNOWN = [
    (b"", 4, 0),  # murmur3_32("") = 0
    (b"hello", 4, 3),  # murmur3_32("hello") = 0x248bfa47 = 613153351
    (b"hello", 7, 6),
    (b"hello", 16, 7),
    (b"The quick brown fox jumps over the lazy dog", 4, 3),  # 0x2e4ff723 = 776992547
    (b"The quick brown fox jumps over the lazy dog", 7, 2),
    (b"\x02", 7, 1),  # Avro long 1; murmur3_32 = 1814548639
    (b"\x02", 16, 15),
    (b"\x01", 16, 11),  # Avro long -1; 3831157163
    (b"T", 7, 4),  # Avro long 42; 4115314515
    (b" key:000000000001", 4, 1),  # Avro string "key:000000000001"; 886224785
    (b"\x10member-7", 16, 12),  # Avro string "member-7"; 231453356
]


@pytest.mark.parametrize(("key", "partitions", "expected"), KNOWN)
def test_known_partitions(key: bytes, partitions: int, expected: int) -> None:
    assert partition_for(key, partitions) == expected


@pytest.mark.parametrize("partitions", [4, 7, 16])
def test_partitions_for_a_batch_are_the_known_answers(partitions: int) -> None:
    cases = [(key, expected) for key, p, expected in KNOWN if p == partitions]
    assert partitions_for([key for key, _ in cases], partitions) == [expected for _, expected in cases]


def test_avro_key_bytes_are_the_partitioned_bytes() -> None:
    """The bytes above are what the key codecs produce for those keys."""
    long_key, string_key = AvroCodec("long", kind="key"), AvroCodec("string", kind="key")
    assert long_key.encode(1) == b"\x02"
    assert long_key.encode(-1) == b"\x01"
    assert long_key.encode(42) == b"T"
    assert string_key.encode("key:000000000001") == b" key:000000000001"
    assert string_key.encode("member-7") == b"\x10member-7"
