"""LMDB storage of a store-version: data, checkpoint and change log in one transaction,
the bounded change log, counts, cleanup."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from venice.ingestion.records import TOMBSTONE, Change, Checkpoint, Outcome, decode_stored, encode_stored, rt_adopt
from venice.ingestion.storage import VersionStorage


class TestVersionStorage:
    def test_apply_writes_data_and_checkpoint_together(self, tmp_path: Path) -> None:
        storage = VersionStorage(tmp_path / "v1", 4, [0, 2])
        storage.apply(0, [(b"k1", encode_stored(1, b"v1")), (b"k2", encode_stored(1, b"v2"))], Checkpoint(3, False, True, 2))
        assert decode_stored(storage.get(0, b"k1") or b"") == (1, b"v1")
        assert storage.get(2, b"k1") is None
        assert storage.checkpoint(0) == Checkpoint(3, False, True, 2)
        assert storage.checkpoint(2) == Checkpoint()
        assert storage.count(0) == 2
        storage.close()

    def test_state_survives_reopen(self, tmp_path: Path) -> None:
        storage = VersionStorage(tmp_path / "v1", 2, [1])
        checkpoint = Checkpoint(10, True, True, 1, rt_offset=7, skipped=2)
        storage.apply(1, [(b"k", encode_stored(2, b"x"))], checkpoint)
        storage.close()
        reopened = VersionStorage(tmp_path / "v1", 2, [1])
        assert reopened.checkpoint(1) == checkpoint
        assert reopened.get_many([(1, b"k"), (1, b"missing")]) == [encode_stored(2, b"x"), None]
        reopened.close()

    def test_deletes_and_destroy(self, tmp_path: Path) -> None:
        storage = VersionStorage(tmp_path / "v1", 1, [0])
        storage.apply(0, [(b"k", encode_stored(1, b"x"))], Checkpoint(1))
        storage.apply(0, [(b"k", None)], Checkpoint(2))
        assert storage.get(0, b"k") is None
        storage.destroy()
        assert not (tmp_path / "v1").exists()

    def test_a_failed_decision_writes_nothing(self, tmp_path: Path) -> None:
        """Data, checkpoint and change log go together or not at all."""
        storage = VersionStorage(tmp_path / "v1", 1, [0])
        storage.apply(0, [(b"k", encode_stored(1, b"old"))], Checkpoint(1, True, True, 1, rt_offset=0))

        def decide(read: object) -> Outcome:
            raise RuntimeError("decided badly")

        with pytest.raises(RuntimeError):
            storage.write_batch(0, decide)  # type: ignore[arg-type]
        assert storage.get(0, b"k") == encode_stored(1, b"old")
        assert storage.checkpoint(0) == Checkpoint(1, True, True, 1, rt_offset=0)
        assert storage.changes(0) == []

    def test_decisions_read_inside_the_write_transaction(self, tmp_path: Path) -> None:
        storage = VersionStorage(tmp_path / "v1", 1, [0])
        storage.apply(0, [(b"k", encode_stored(1, b"seen"))], Checkpoint(1))
        seen: list[bytes | None] = []

        def decide(read: object) -> Outcome:
            seen.append(read(b"k"))  # type: ignore[operator]
            seen.append(read(b"nope"))  # type: ignore[operator]
            return Outcome(Checkpoint(2), [(b"k", None)])

        storage.write_batch(0, decide)  # type: ignore[arg-type]
        assert seen == [encode_stored(1, b"seen"), None]
        assert storage.get(0, b"k") is None

    def test_drop_partition_removes_data_change_log_and_checkpoint(self, tmp_path: Path) -> None:
        storage = VersionStorage(tmp_path / "v1", 2, [0, 1])
        for p in (0, 1):
            storage.write_batch(
                p, lambda _r: Outcome(Checkpoint(1, True, True, 0, rt_offset=1), [(b"k", encode_stored(1, b"v"))], [Change(0, b"k", 1, b"v")])
            )
        storage.drop_partition(0)
        assert (storage.count(0), storage.checkpoint(0), storage.changes(0)) == (0, Checkpoint(), [])
        assert (storage.count(1), len(storage.changes(1))) == (1, 1)
        storage.close()


class TestChangeLog:
    def test_entry_layout_is_the_documented_one(self) -> None:
        # u32 key length, i32 schema id, key, value (big-endian); tombstones have id -1
        assert Change(5, b"key", 3, b"val").encode() == struct.pack(">Ii", 3, 3) + b"keyval"
        assert Change(6, b"k", TOMBSTONE, b"").encode() == b"\x00\x00\x00\x01\xff\xff\xff\xffk"
        assert Change.decode(6, b"\x00\x00\x00\x01\xff\xff\xff\xffk") == Change(6, b"k", TOMBSTONE, b"")
        assert Change.decode(6, b"\x00\x00\x00\x01\xff\xff\xff\xffk").deleted

    def test_keeps_the_newest_entries_and_reads_after_an_offset(self, tmp_path: Path) -> None:
        storage = VersionStorage(tmp_path / "v1", 1, [0], changelog_size=5)
        offset = 0
        for batch in (3, 4, 2):  # 9 entries written in three transactions
            changes = [Change(offset + i, b"k%d" % (offset + i), 1, b"v%d" % (offset + i)) for i in range(batch)]
            offset += batch
            storage.write_batch(0, lambda _r, c=changes, o=offset: Outcome(Checkpoint(0, True, True, 0, rt_offset=o), [], c))
        assert [c.offset for c in storage.changes(0)] == [4, 5, 6, 7, 8]
        assert [c.offset for c in storage.changes(0, after=5)] == [6, 7, 8]
        assert [c.offset for c in storage.changes(0, after=4, limit=2)] == [5, 6]
        assert storage.changes(0, after=8) == []
        assert storage.changes(0, after=1, limit=1) == [Change(4, b"k4", 1, b"v4")]
        # offsets past 2**32 sort correctly (8-byte big-endian keys)
        big = [Change((1 << 40) + 1, b"x", 1, b""), Change(1 << 33, b"y", TOMBSTONE, b"")]
        storage.write_batch(0, lambda _r: Outcome(Checkpoint(0, True, True, 0, rt_offset=0), [], big))
        assert [c.offset for c in storage.changes(0, after=8)] == [1 << 33, (1 << 40) + 1]
        storage.close()

    def test_a_new_real_time_epoch_empties_the_change_log_with_the_same_transaction(self, tmp_path: Path) -> None:
        """The log is keyed by offsets of one real-time topic: entries of the old topic
        would mix with the new one's (which start again at 0)."""
        storage = VersionStorage(tmp_path / "v1", 2, [0, 1])
        old = Checkpoint(3, True, True, 1, rt_offset=12, rt_epoch=1)
        for p in (0, 1):
            storage.write_batch(p, lambda _r, c=old: Outcome(c, [(b"k", encode_stored(1, b"v"))], [Change(11, b"k", 1, b"v")]))
        adopted = rt_adopt(old, epoch=2, start=0)
        storage.write_batch(0, lambda _r: Outcome(adopted.checkpoint, [(b"n", encode_stored(1, b"w"))], [Change(0, b"n", 1, b"w")], clear_changes=True))
        assert storage.changes(0) == [Change(0, b"n", 1, b"w")]  # only the new topic's entry
        assert storage.checkpoint(0) == Checkpoint(3, True, True, 1, rt_offset=0, rt_epoch=2)
        assert storage.get(0, b"k") == encode_stored(1, b"v")  # data stays
        assert storage.changes(1) == [Change(11, b"k", 1, b"v")]  # other partitions untouched
        storage.close()

    def test_a_new_real_time_epoch_forgets_the_old_epochs_trim_mark(self, tmp_path: Path) -> None:
        """The trim mark is an offset of the old topic: kept, it would make every position of
        the new topic (which starts again at 0) look older than the log reaches."""
        storage = VersionStorage(tmp_path / "v1", 1, [0], changelog_size=2)
        old = Checkpoint(3, True, True, 1, rt_offset=504, rt_epoch=1)
        changes = [Change(500 + i, b"k%d" % i, 1, b"v") for i in range(4)]
        storage.write_batch(0, lambda _r: Outcome(old, [], changes))
        assert storage.changelog_trimmed(0) == 501
        adopted = rt_adopt(old, epoch=2, start=0)
        storage.write_batch(0, lambda _r: Outcome(adopted.checkpoint, [], [Change(0, b"n", 1, b"w")], clear_changes=True))
        assert storage.changelog_trimmed(0) is None
        assert [c.offset for c in storage.changes(0)] == [0]
        storage.close()


class TestCheckpoint:
    def test_reads_checkpoints_written_before_real_time_fields(self) -> None:
        old = b'{"offset":12,"eop":true,"sop":true,"records":10}'
        assert Checkpoint.from_bytes(old) == Checkpoint(12, True, True, 10, None, 0, None)

    def test_round_trip(self) -> None:
        for checkpoint in (
            Checkpoint(),
            Checkpoint(5, True, True, 3, 0, 0, None),
            Checkpoint(9, True, False, 2, 77, 4, "end-of-push says 3"),
            Checkpoint(9, True, True, 2, 77, 4, None, rt_epoch=3, rt_lost=1200),
        ):
            assert Checkpoint.from_bytes(checkpoint.to_bytes()) == checkpoint

    def test_epoch_and_lost_records_are_stored_as_named_fields(self) -> None:
        """The stored form is part of what replicas compare byte for byte: a literal."""
        stored = Checkpoint(9, True, True, 2, 77, 0, None, rt_epoch=3, rt_lost=12).to_bytes()
        assert stored == b'{"offset":9,"eop":true,"sop":true,"records":2,"rt":77,"rt_epoch":3,"rt_lost":12}'
        assert Checkpoint(9, True, True, 2, 77).to_bytes() == b'{"offset":9,"eop":true,"sop":true,"records":2,"rt":77}'


class TestAppendedBatches:
    """A batch of puts whose keys ascend past the last stored key is appended (LMDB
    ``putmulti(append=True)``); any other batch is written key by key. Either way the
    partition holds what a plain dict of the same writes in log order holds."""

    @staticmethod
    def reference(batches: list[list[tuple[bytes, bytes | None]]]) -> list[tuple[bytes, bytes]]:
        model: dict[bytes, bytes] = {}
        for batch in batches:
            for key, value in batch:
                if value is None:
                    model.pop(key, None)
                else:
                    model[key] = value
        return sorted(model.items())

    def run(self, tmp_path: Path, batches: list[list[tuple[bytes, bytes | None]]]) -> tuple[VersionStorage, list]:
        storage = VersionStorage(tmp_path / "v", 1, [0])
        for n, batch in enumerate(batches, 1):
            storage.apply(0, batch, Checkpoint(n))
        stored = storage.dump()[b"p0"]
        assert storage.checkpoint(0) == Checkpoint(len(batches))
        return storage, stored

    def test_sorted_batches_of_a_fresh_partition_are_appended(self, tmp_path: Path) -> None:
        keys = sorted(b"key:%06d" % i for i in range(0, 3000, 3))
        batches = [[(k, b"v" + k) for k in keys[i : i + 100]] for i in range(0, len(keys), 100)]
        storage, stored = self.run(tmp_path, batches)
        assert stored == self.reference(batches)
        assert storage.appended_batches == len(batches)
        storage.close()

    def test_lmdb_order_is_bytewise_with_prefixes_first(self, tmp_path: Path) -> None:
        batch: list[tuple[bytes, bytes | None]] = [(b"a", b"1"), (b"ab", b"2"), (b"b", b"3"), (b"b\x00", b"4"), (b"\xff", b"5")]
        storage, stored = self.run(tmp_path, [batch])
        assert stored == [(b"a", b"1"), (b"ab", b"2"), (b"b", b"3"), (b"b\x00", b"4"), (b"\xff", b"5")]
        assert storage.appended_batches == 1
        storage.close()

    @pytest.mark.parametrize(
        "second",
        [
            [(b"k3", b"x"), (b"k5", b"y")],  # starts at the last stored key: must overwrite, not append
            [(b"k1", b"x"), (b"k9", b"y")],  # starts below it
            [(b"k7", b"x"), (b"k6", b"y")],  # not ascending
            [(b"k7", b"x"), (b"k7", b"y")],  # a repeated key: the later value wins
            [(b"k7", b"x"), (b"k3", None)],  # a delete among them
        ],
    )
    def test_other_batches_are_written_key_by_key(self, tmp_path: Path, second: list[tuple[bytes, bytes | None]]) -> None:
        first: list[tuple[bytes, bytes | None]] = [(b"k1", b"a"), (b"k2", b"b"), (b"k3", b"c")]
        storage, stored = self.run(tmp_path, [first, second])
        assert stored == self.reference([first, second])
        assert storage.appended_batches == 1  # only the first
        storage.close()

    def test_a_reader_sees_appended_data(self, tmp_path: Path) -> None:
        storage = VersionStorage(tmp_path / "v", 1, [0])
        storage.apply(0, [(b"a", b"1"), (b"b", b"2")], Checkpoint(1))
        assert storage.get_many([(0, b"a"), (0, b"b"), (0, b"c")]) == [b"1", b"2", None]
        storage.apply(0, [(b"c", b"3"), (b"d", b"4")], Checkpoint(2))
        assert storage.get_many([(0, b"c"), (0, b"d")]) == [b"3", b"4"]
        assert [storage.get(0, k) for k in (b"a", b"b", b"c", b"d")] == [b"1", b"2", b"3", b"4"]
        assert storage.appended_batches == 2
        storage.close()


class TestPartitionReader:
    """The server's reader keeps one read transaction; it must still see every write that
    committed before the read (it renews its snapshot when the storage's generation moved)."""

    def test_sees_each_commit_made_after_its_first_read(self, tmp_path: Path) -> None:
        import random

        storage = VersionStorage(tmp_path / "v", 2, [0, 1])
        read = storage.reader(0)
        model: dict[bytes, bytes] = {}
        rng = random.Random(5)
        for step in range(300):
            keys = [b"k%d" % rng.randrange(40) for _ in range(rng.randrange(1, 6))]
            writes: list[tuple[bytes, bytes | None]] = [
                (k, None if rng.random() < 0.3 else b"v%d-%d" % (step, i)) for i, k in enumerate(keys)
            ]
            storage.apply(0, writes, Checkpoint(step + 1))
            storage.apply(1, [(b"other", b"%d" % step)], Checkpoint(step + 1))  # another partition's commit
            for key, value in writes:
                if value is None:
                    model.pop(key, None)
                else:
                    model[key] = value
            probe = [b"k%d" % i for i in range(40)]
            assert [read(k) for k in probe] == [model.get(k) for k in probe]
        storage.close()

    def test_a_dropped_partition_reads_empty(self, tmp_path: Path) -> None:
        storage = VersionStorage(tmp_path / "v", 1, [0])
        storage.apply(0, [(b"a", b"1")], Checkpoint(1))
        read = storage.reader(0)
        assert read(b"a") == b"1"
        storage.drop_partition(0)
        assert read(b"a") is None
        storage.close()

    def test_stale_snapshots_are_released_and_fresh_ones_kept(self, tmp_path: Path) -> None:
        storage = VersionStorage(tmp_path / "v", 2, [0, 1])
        storage.apply(0, [(b"a", b"1")], Checkpoint(1))
        first, second = storage.reader(0), storage.reader(1)
        assert first(b"a") == b"1" and second(b"a") is None
        storage.release_stale_readers()
        assert first.seen == storage.generation and second.seen == storage.generation  # nothing committed since
        storage.apply(0, [(b"a", b"2")], Checkpoint(2))
        assert second(b"a") is None  # second renews with this read, first stays behind
        storage.release_stale_readers()
        assert first.seen == -1 and second.seen == storage.generation
        assert first(b"a") == b"2"  # and reads the newest after its release
        storage.close()
        assert first.seen == -1 and second.seen == -1


def test_a_reader_of_a_read_only_storage_sees_another_process_commit(tmp_path: Path) -> None:
    """A read worker opens the files read-only while the ingesting process writes: with no
    generation to watch, each read must take a fresh snapshot."""
    import subprocess
    import sys

    writer_code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from venice.ingestion.records import Checkpoint\n"
        "from venice.ingestion.storage import VersionStorage\n"
        "s = VersionStorage(Path(sys.argv[1]), 1, [0])\n"
        "s.apply(0, [(b'k', sys.argv[2].encode())], Checkpoint(int(sys.argv[3])))\n"
        "s.close()\n"
    )
    path = tmp_path / "v"
    subprocess.run([sys.executable, "-c", writer_code, str(path), "one", "1"], check=True)
    reader_storage = VersionStorage(path, 1, [0], readonly=True)
    read = reader_storage.reader(0)
    assert read(b"k") == b"one"
    subprocess.run([sys.executable, "-c", writer_code, str(path), "two", "2"], check=True)
    assert read(b"k") == b"two"
    reader_storage.close()
