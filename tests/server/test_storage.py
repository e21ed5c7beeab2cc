"""LMDB storage: data and checkpoint in one transaction, counts, cleanup."""

from __future__ import annotations

from pathlib import Path

from server.storage import Checkpoint, VersionStorage, decode_stored, encode_stored


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
        storage.apply(1, [(b"k", encode_stored(2, b"x"))], Checkpoint(10, True, True, 1))
        storage.close()
        reopened = VersionStorage(tmp_path / "v1", 2, [1])
        assert reopened.checkpoint(1).end_of_push
        assert reopened.get_many([(1, b"k"), (1, b"missing")]) == [encode_stored(2, b"x"), None]
        reopened.close()

    def test_deletes_and_destroy(self, tmp_path: Path) -> None:
        storage = VersionStorage(tmp_path / "v1", 1, [0])
        storage.apply(0, [(b"k", encode_stored(1, b"x"))], Checkpoint(1))
        storage.apply(0, [(b"k", None)], Checkpoint(2))
        assert storage.get(0, b"k") is None
        storage.destroy()
        assert not (tmp_path / "v1").exists()
