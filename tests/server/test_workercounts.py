"""server/workercounts.py: the read counts a read worker publishes for the ingesting
process; what is written is read back, and files that are not ours are skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from server import workercounts


def test_written_counts_are_read_back(tmp_path: Path) -> None:
    workercounts.write(tmp_path, 101, [["s", 3, 10, 2, 1, 7]], [["s", "3", "single", "BAD_REQUEST", 4]])
    workercounts.write(tmp_path, 102, [["s", 3, 5, 0, 0, 0], ["t", 1, 1, 1, 1, 1]], [])
    workercounts.write(tmp_path, 101, [["s", 3, 11, 2, 1, 7]], [["s", "3", "single", "BAD_REQUEST", 5]])  # replaced
    found = list(workercounts.read_all(tmp_path))
    assert [w.reads for w in found] == [{("s", 3): (11, 2, 1, 7)}, {("s", 3): (5, 0, 0, 0), ("t", 1): (1, 1, 1, 1)}]
    assert [w.refused for w in found] == [{("s", "3", "single", "BAD_REQUEST"): 5}, {}]
    assert sorted(p.name for p in (tmp_path / workercounts.COUNTS_DIR).iterdir()) == ["101.json", "102.json"]
    workercounts.clear(tmp_path)
    assert list(workercounts.read_all(tmp_path)) == []


@pytest.mark.parametrize("content", [
    b"", b"not json", b"[]", b'{"reads": []}', b'{"reads": {}, "refused": []}',
    b'{"reads": [["s", 1, 2, 3, 4]], "refused": []}',  # a short row
    b'{"reads": [["s", "1", 2, 3, 4, 5]], "refused": []}',  # a version that is not an int
    b'{"reads": [["s", 1, -2, 3, 4, 5]], "refused": []}',  # a negative count
    b'{"reads": [["s", 1, 2.5, 3, 4, 5]], "refused": []}',
    b'{"reads": [["s", 1, true, 3, 4, 5]], "refused": []}',
    b'{"reads": [], "refused": [["s", "1", "single", 5]]}',
    b'{"reads": [], "refused": [["s", 1, "single", "X", 5]]}',
    b'{"reads": [["' + b"x" * 300 + b'", 1, 2, 3, 4, 5]], "refused": []}',
    b"\xff\xfe",
])
def test_a_file_that_is_not_ours_is_skipped(tmp_path: Path, content: bytes) -> None:
    workercounts.write(tmp_path, 7, [["s", 1, 1, 0, 0, 0]], [])
    (tmp_path / workercounts.COUNTS_DIR / "8.json").write_bytes(content)
    assert [w.reads for w in workercounts.read_all(tmp_path)] == [{("s", 1): (1, 0, 0, 0)}]


def test_an_oversized_file_is_skipped_unread(tmp_path: Path) -> None:
    folder = tmp_path / workercounts.COUNTS_DIR
    folder.mkdir()
    with (folder / "9.json").open("wb") as big:
        big.truncate(5 * 1024 * 1024)
    assert list(workercounts.read_all(tmp_path)) == []
