"""The pure rules for applying records (no LMDB, no broker): every kind of record, every
poison pill, and identical decisions however the log is cut into batches."""

from __future__ import annotations

import io
from collections.abc import Sequence

import fastavro
import pytest

from tests.ingestion.helpers import VALUE_SCHEMA, VALUE_SCHEMA_V2, VALUES_V2, key, keys_of_partition, message, value
from venice.ingestion.records import (
    TOMBSTONE,
    Change,
    Checkpoint,
    Outcome,
    SkipKind,
    UnknownSchema,
    UnusableRecord,
    apply_rt_batch,
    apply_version_batch,
    decode_stored,
    encode_stored,
    rt_adopt,
    rt_resume,
)
from venice.ingestion.schemas import StoreCodecs
from venice.structs import Message
from venice.wire import ControlKind, control_headers, data_headers, encode_control, update_headers

SOP = (control_headers(ControlKind.START_OF_PUSH), encode_control({}))


def eop(records: int) -> tuple[list[tuple[str, bytes]], bytes]:
    return control_headers(ControlKind.END_OF_PUSH), encode_control({"records": records})


def control(offset: int, kind: tuple[list[tuple[str, bytes]], bytes]) -> Message:
    headers, payload = kind
    return message(offset, b"", payload, headers)


class TestStoredValues:
    def test_layout_is_schema_id_then_avro_bytes(self) -> None:
        assert encode_stored(1, b"abc") == b"\x00\x00\x00\x01abc"
        assert encode_stored(258, b"") == b"\x00\x00\x01\x02"
        assert decode_stored(b"\x00\x00\x01\x02xyz") == (258, b"xyz")


class TestVersionTopic:
    def test_push_applies_puts_and_deletes_then_end_of_push(self) -> None:
        messages = [
            control(0, SOP),
            message(1, b"a", b"1", data_headers(1)),
            message(2, b"b", b"2", data_headers(3)),
            message(3, b"a", None, data_headers(1)),
            control(4, eop(3)),
        ]
        outcome = apply_version_batch(Checkpoint(), messages)
        assert outcome.writes == [(b"a", b"\x00\x00\x00\x011"), (b"b", b"\x00\x00\x00\x032"), (b"a", None)]
        assert outcome.checkpoint == Checkpoint(offset=5, end_of_push=True, start_of_push=True, records=3)
        assert (outcome.applied, outcome.end_of_push, outcome.changes) == (3, True, [])

    def test_count_mismatch_fails_the_partition_for_good(self) -> None:
        outcome = apply_version_batch(Checkpoint(), [control(0, SOP), message(1, b"a", b"1"), control(2, eop(2))])
        assert outcome.checkpoint.failed == "end-of-push says 2 records, applied 1"
        assert outcome.checkpoint.end_of_push

    def test_hybrid_version_starts_real_time_where_told_at_end_of_push(self) -> None:
        before = apply_version_batch(Checkpoint(), [control(0, SOP), message(1, b"a", b"1")], rt_start=42)
        assert before.checkpoint.rt_offset is None  # not before end-of-push
        after = apply_version_batch(before.checkpoint, [control(2, eop(1))], rt_start=42)
        assert after.checkpoint.rt_offset == 42
        batch_only = apply_version_batch(before.checkpoint, [control(2, eop(1))])
        assert batch_only.checkpoint.rt_offset is None

    def test_the_real_time_offset_set_at_end_of_push_names_its_epoch(self) -> None:
        log = [control(0, SOP), message(1, b"a", b"1"), control(2, eop(1))]
        hybrid = apply_version_batch(Checkpoint(), log, rt_start=42, rt_epoch=3).checkpoint
        assert (hybrid.rt_offset, hybrid.rt_epoch) == (42, 3)
        assert (hybrid.rt_next(3), hybrid.rt_next(2)) == (42, None)  # not an offset of another epoch's topic
        no_offset_yet = apply_version_batch(Checkpoint(), log, rt_start=None, rt_epoch=3).checkpoint
        assert (no_offset_yet.rt_offset, no_offset_yet.rt_epoch, no_offset_yet.rt_next(3)) == (None, 0, None)

    def test_redeliveries_and_records_after_end_of_push_are_ignored(self) -> None:
        first = apply_version_batch(Checkpoint(), [control(0, SOP), message(1, b"a", b"1"), message(2, b"b", b"2")])
        again = apply_version_batch(first.checkpoint, [message(1, b"a", b"1"), message(2, b"b", b"2"), message(3, b"c", b"3"), control(4, eop(3)), message(5, b"late", b"x")])
        assert again.writes == [(b"c", encode_stored(1, b"3"))]
        assert again.checkpoint == Checkpoint(5, True, True, 3)

    def test_any_cut_into_batches_decides_the_same(self) -> None:
        log = [control(0, SOP)] + [message(i, b"k%d" % (i % 7), None if i % 5 == 0 else b"v%d" % i) for i in range(1, 40)] + [control(40, eop(39))]
        whole = apply_version_batch(Checkpoint(), log, rt_start=3)
        for size in (1, 2, 7, 39):
            checkpoint, writes = Checkpoint(), []
            for start in range(0, len(log), size):
                outcome = apply_version_batch(checkpoint, log[start : start + size], rt_start=3)
                checkpoint = outcome.checkpoint
                writes += outcome.writes
            assert (checkpoint, writes) == (whole.checkpoint, whole.writes)


class TestRealTimeEpochs:
    def test_a_partition_with_no_offset_adopts_the_start(self) -> None:
        outcome = rt_adopt(Checkpoint(7, True, True, 5), epoch=1, start=30)
        assert outcome.checkpoint == Checkpoint(7, True, True, 5, rt_offset=30, rt_epoch=1)
        assert not outcome.clear_changes and outcome.writes == [] and outcome.changes == []

    def test_an_older_epochs_offset_is_replaced_and_its_change_log_emptied(self) -> None:
        """Offsets of the old topic mean nothing in the new one (the bug: resuming at 812 of
        a topic that starts over at 0). Counts of what this replica skipped or lost stay."""
        old = Checkpoint(7, True, True, 5, rt_offset=812, skipped=2, rt_epoch=1, rt_lost=4)
        outcome = rt_adopt(old, epoch=2, start=0)
        assert outcome.checkpoint == Checkpoint(7, True, True, 5, rt_offset=0, skipped=2, rt_epoch=2, rt_lost=4)
        assert outcome.clear_changes

    def test_epoch_0_is_what_checkpoints_from_before_epochs_read_as(self) -> None:
        old = Checkpoint.from_bytes(b'{"offset":12,"eop":true,"sop":true,"records":10,"rt":55}')
        assert (old.rt_epoch, old.rt_next(0), old.rt_next(1)) == (0, 55, None)


class TestOutOfRange:
    """Where a partition goes on when the log no longer (or not yet) holds its next
    real-time offset: literal answers for each case."""

    AT = Checkpoint(7, True, True, 5, rt_offset=100, skipped=1, rt_epoch=2, rt_lost=3)

    def test_below_the_beginning_goes_on_at_the_beginning_counting_the_records_lost(self) -> None:
        assert rt_resume(self.AT, beginning=160, end=400) == Checkpoint(7, True, True, 5, rt_offset=160, skipped=1, rt_epoch=2, rt_lost=3 + 60)

    def test_beyond_the_end_starts_over_at_the_beginning_losing_nothing(self) -> None:
        assert rt_resume(self.AT, beginning=0, end=40) == Checkpoint(7, True, True, 5, rt_offset=0, skipped=1, rt_epoch=2, rt_lost=3)
        assert rt_resume(self.AT, beginning=20, end=40) == Checkpoint(7, True, True, 5, rt_offset=20, skipped=1, rt_epoch=2, rt_lost=3)

    @pytest.mark.parametrize(("beginning", "end"), [(100, 100), (0, 100), (100, 500), (99, 101)])
    def test_an_offset_the_log_holds_changes_nothing(self, beginning: int, end: int) -> None:
        assert rt_resume(self.AT, beginning, end) is None

    def test_no_real_time_offset_changes_nothing(self) -> None:
        assert rt_resume(Checkpoint(7, True, True, 5), 50, 60) is None

    def test_replicas_at_the_same_offset_finding_the_same_log_decide_alike(self) -> None:
        a = Checkpoint(3, True, True, 2, rt_offset=10, rt_epoch=1)
        b = Checkpoint.from_bytes(a.to_bytes())
        assert rt_resume(a, 25, 90) == rt_resume(b, 25, 90) == Checkpoint(3, True, True, 2, rt_offset=25, rt_epoch=1, rt_lost=15)


# -- real-time topic ---------------------------------------------------------------------------

P = 4
K0, K1, K2 = keys_of_partition(0, P, 3)
(OTHER,) = keys_of_partition(1, P, 1)
START = Checkpoint(10, True, True, 5, rt_offset=100)


def rt(offset: int, k: int | bytes, v: bytes | None, headers: Sequence[tuple[str, bytes]] = ()) -> Message:
    return message(offset, key(k) if isinstance(k, int) else k, v, headers)


def run(messages: Sequence[Message], store: dict[bytes, bytes], schemas: object, *, missing: frozenset[int] = frozenset(), checkpoint: Checkpoint = START) -> Outcome:
    """Apply one batch to partition 0 of a dict "database", as a write transaction would."""
    outcome = apply_rt_batch(checkpoint, messages, partition=0, partitions_total=P, schemas=schemas, read=store.get, missing=missing)  # type: ignore[arg-type]
    for k, v in outcome.writes:
        if v is None:
            store.pop(k, None)
        else:
            store[k] = v
    return outcome


class TestRealTimeRecords:
    schemas = StoreCodecs({1: VALUE_SCHEMA, 2: VALUE_SCHEMA_V2}, key_schema="long")

    def test_puts_and_deletes_with_their_after_images(self) -> None:
        store = {key(K1): encode_stored(1, value("pushed"))}
        v2 = VALUES_V2.encode({"name": "b", "count": 2, "tags": [], "note": "hi"})
        outcome = run([rt(100, K0, value("a", 1)), rt(101, K1, None), rt(102, K2, v2, data_headers(2)), rt(103, K2, value("c"), [])], store, self.schemas)
        assert store == {key(K0): encode_stored(1, value("a", 1)), key(K2): encode_stored(1, value("c"))}
        assert outcome.changes == [
            Change(100, key(K0), 1, value("a", 1)),
            Change(101, key(K1), TOMBSTONE, b""),
            Change(102, key(K2), 2, v2),
            Change(103, key(K2), 1, value("c")),
        ]
        assert outcome.checkpoint == Checkpoint(10, True, True, 5, rt_offset=104, skipped=0)
        assert (outcome.applied, outcome.skipped) == (4, [])

    @pytest.mark.parametrize(
        ("record", "kind"),
        [
            (rt(100, OTHER, value("x")), SkipKind.WRONG_PARTITION),
            (rt(100, b"", value("x")), SkipKind.BAD_KEY),
            (rt(100, b"\x80", value("x")), SkipKind.BAD_KEY),  # not a long
            (rt(100, key(K0) + b"\x00", value("x")), SkipKind.BAD_KEY),  # trailing byte
            (rt(100, b"\x02" * 600, None), SkipKind.BAD_KEY),  # longer than LMDB takes, even for a delete
            (rt(100, K0, b"\xff\xff\xff"), SkipKind.UNDECODABLE),
            (rt(100, K0, value("x") + b"\x00"), SkipKind.UNDECODABLE),  # trailing bytes
            (rt(100, K0, value("x")[:-1]), SkipKind.UNDECODABLE),  # truncated
            (rt(100, K0, b"\x04\xff\xfe" + value("x")[3:]), SkipKind.UNDECODABLE),  # not UTF-8
            (rt(100, K0, value("x"), [("schema-id", b"abc")]), SkipKind.UNDECODABLE),
            (rt(100, K0, value("x"), [("schema-id", b"0")]), SkipKind.UNDECODABLE),
            (rt(100, K0, value("x"), [("schema-id", b" 1")]), SkipKind.UNDECODABLE),
            (rt(100, K0, value("x"), [("schema-id", b"1" * 20)]), SkipKind.UNDECODABLE),
            (rt(100, K0, value("x"), [("schema-id", "١".encode())]), SkipKind.UNDECODABLE),  # a non-ASCII digit
            (rt(100, b"", encode_control({}), control_headers(ControlKind.END_OF_PUSH)), SkipKind.CONTROL_MESSAGE),
            (rt(100, K0, value("x"), [("venice-control", b"SOMETHING_NEW")]), SkipKind.CONTROL_MESSAGE),
            (rt(100, K0, value("x"), [("schema-id", b"9")]), SkipKind.UNKNOWN_SCHEMA),  # with 9 confirmed missing
        ],
    )
    def test_poison_pills_are_skipped_counted_and_the_rest_flows(self, record: Message, kind: SkipKind) -> None:
        store: dict[bytes, bytes] = {}
        after = rt(101, K1, value("fine"))
        outcome = run([record, after], store, self.schemas, missing=frozenset({9}))
        assert [(s.kind, s.offset) for s in outcome.skipped] == [(kind, 100)]
        assert store == {key(K1): encode_stored(1, value("fine"))}
        assert outcome.checkpoint.rt_offset == 102
        assert outcome.checkpoint.skipped == START.skipped + 1
        assert [c.offset for c in outcome.changes] == [101]

    def test_an_unknown_schema_stops_the_batch_before_it(self) -> None:
        store: dict[bytes, bytes] = {}
        outcome = run([rt(100, K0, value("a")), rt(101, K1, value("b"), [("schema-id", b"7")]), rt(102, K2, value("c"))], store, self.schemas)
        assert outcome.need_schema == 7
        assert store == {key(K0): encode_stored(1, value("a"))}
        assert outcome.checkpoint.rt_offset == 101  # resumes at the record that needs the schema
        assert outcome.skipped == []

    def test_a_delete_needs_no_schema(self) -> None:
        store = {key(K0): encode_stored(1, value("a"))}
        outcome = run([rt(100, K0, None, [("schema-id", b"77")])], store, self.schemas)
        assert (store, outcome.need_schema, outcome.skipped) == ({}, None, [])

    def test_redelivered_records_are_not_applied_again(self) -> None:
        store: dict[bytes, bytes] = {}
        first = run([rt(100, K0, value("a")), rt(101, K0, value("b"))], store, self.schemas)
        again = run([rt(100, K0, value("a")), rt(101, K0, value("b")), rt(102, K1, value("c"))], store, self.schemas, checkpoint=first.checkpoint)
        assert [c.offset for c in again.changes] == [102]
        assert store[key(K0)] == encode_stored(1, value("b"))

    def test_before_end_of_push_is_a_bug(self) -> None:
        with pytest.raises(ValueError, match="before end-of-push"):
            run([rt(0, K0, value("a"))], {}, self.schemas, checkpoint=Checkpoint())


class IncrementSchemas:
    """A second, independent implementation of the schema side of updates: values are an
    Avro long, an update is an Avro long to add (enough to test the batch logic)."""

    @staticmethod
    def _long(data: bytes) -> int:
        buf = io.BytesIO(data)
        try:
            number = int(fastavro.schemaless_reader(buf, "long", None))  # type: ignore[arg-type]
        except Exception as exc:
            raise UnusableRecord(SkipKind.UNDECODABLE, str(exc)) from None
        if buf.tell() != len(data):
            raise UnusableRecord(SkipKind.UNDECODABLE, "trailing bytes")
        return number

    @staticmethod
    def _bytes(number: int) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, "long", number)  # type: ignore[arg-type]
        return buf.getvalue()

    def check_key(self, key: bytes) -> None:
        pass  # keys are the test's own

    def check_value(self, schema_id: int, data: bytes) -> None:
        self._long(data)

    def apply_update(self, schema_id: int, update: bytes, current: tuple[int, bytes] | None) -> tuple[int, bytes]:
        total = (0 if current is None else self._long(current[1])) + self._long(update)
        if total >= 1 << 31:
            raise UnusableRecord(SkipKind.UPDATE_FAILED, "overflow")
        return schema_id, self._bytes(total)


class TestUpdates:
    schemas = IncrementSchemas()

    def test_updates_see_earlier_writes_of_their_own_batch(self) -> None:
        b = IncrementSchemas._bytes
        store = {key(K0): encode_stored(1, b(10))}
        up = update_headers(1)
        outcome = run([rt(100, K0, b(5), up), rt(101, K0, b(1), up), rt(102, K1, b(3), up), rt(103, K1, None), rt(104, K1, b(4), up)], store, self.schemas)
        assert store == {key(K0): encode_stored(1, b(16)), key(K1): encode_stored(1, b(4))}
        assert [(c.offset, c.schema_id, c.value) for c in outcome.changes] == [
            (100, 1, b(15)), (101, 1, b(16)), (102, 1, b(3)), (103, TOMBSTONE, b""), (104, 1, b(4)),
        ]

    def test_an_update_that_cannot_apply_is_skipped(self) -> None:
        b = IncrementSchemas._bytes
        store = {key(K0): encode_stored(1, b((1 << 31) - 1))}
        outcome = run([rt(100, K0, b(1), update_headers(1)), rt(101, K1, b(2), update_headers(1))], store, self.schemas)
        assert [(s.kind, s.offset) for s in outcome.skipped] == [(SkipKind.UPDATE_FAILED, 100)]
        assert store[key(K0)] == encode_stored(1, b((1 << 31) - 1))
        assert store[key(K1)] == encode_stored(1, b(2))

    def test_replicas_cut_differently_end_identical(self) -> None:
        """Two replicas see the same log in different batches (as consumers do) and end with
        the same data, the same checkpoint and the same change log."""
        b = IncrementSchemas._bytes
        log = []
        for i in range(60):
            k = [K0, K1, K2, OTHER][i % 4]
            if i % 11 == 0:
                log.append(rt(100 + i, k, None))
            elif i % 3 == 0:
                log.append(rt(100 + i, k, b(i)))
            elif i % 13 == 0:
                log.append(rt(100 + i, k, b"\xff", update_headers(1)))  # undecodable
            else:
                log.append(rt(100 + i, k, b(i), update_headers(1)))
        results = []
        for size in (1, 4, 17, 60):
            store: dict[bytes, bytes] = {}
            checkpoint, changes = START, []
            for start in range(0, len(log), size):
                outcome = run(log[start : start + size], store, self.schemas, checkpoint=checkpoint)
                checkpoint = outcome.checkpoint
                changes += outcome.changes
            results.append((store, checkpoint, changes))
        assert all(r == results[0] for r in results)
        assert results[0][1].skipped == 15 + 3  # keys of another partition (i % 4 == 3), undecodable updates (i = 13, 26, 52)
        assert results[0][1].rt_offset == 160


class TestStoreCodecs:
    def test_learns_new_ids_only(self) -> None:
        codecs = StoreCodecs({1: VALUE_SCHEMA})
        assert 2 not in codecs
        assert codecs.add({1: VALUE_SCHEMA_V2, 2: VALUE_SCHEMA_V2})
        assert not codecs.add({2: VALUE_SCHEMA})
        assert codecs.schemas() == {1: VALUE_SCHEMA, 2: VALUE_SCHEMA_V2}

    def test_values_decode_exactly(self) -> None:
        codecs = StoreCodecs({1: "string", 2: "long", 3: VALUE_SCHEMA})
        codecs.check_value(1, b"\x06abc")
        codecs.check_value(2, b"\x02")
        codecs.check_value(3, value("x", 1, ["t"]))
        for schema_id, data in ((1, b"\x06ab"), (1, b"\x06abcd"), (2, b"\x80"), (2, b"\x02\x02"), (3, value("x") + b"\x00"), (3, b"")):
            with pytest.raises(UnusableRecord) as caught:
                codecs.check_value(schema_id, data)
            assert caught.value.kind is SkipKind.UNDECODABLE, (schema_id, data)
        with pytest.raises(UnknownSchema):
            codecs.check_value(4, b"")

    def test_keys_must_decode_and_fit_lmdb(self) -> None:
        codecs = StoreCodecs({1: "string"}, key_schema="string")
        codecs.check_key(b"\x06abc")
        for bad in (b"", b"\x06ab", b"\x06abcd", b"\xfe" + b"a" * 600):
            with pytest.raises(UnusableRecord) as caught:
                codecs.check_key(bad)
            assert caught.value.kind is SkipKind.BAD_KEY
        StoreCodecs({1: "string"}).check_key(b"any bytes")  # no key schema: only the size is checked
