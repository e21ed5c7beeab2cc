"""Reading push inputs: every format, gzip, positions, and each kind of malformed file."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from venice.errors import InvalidInputError
from venice.push.formats import detect_format, open_records

from .files import MEMBER_AVRO_SCHEMA, gzip_file, write_avro, write_csv, write_jsonl, write_parquet


def read_all(path: Path, fmt: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    with open_records(path, fmt) as source:
        return list(source)


def error_of(path: Path, fmt: str | None = None) -> str:
    with pytest.raises(InvalidInputError) as caught:
        read_all(path, fmt)
    return caught.value.message


# -- well-formed input ------------------------------------------------------------------


def test_jsonl_positions_are_physical_lines_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": 1}\n\n   \n{"id": 2}\n{"id": 3}')  # no final newline
    assert read_all(path) == [("line 1", {"id": 1}), ("line 4", {"id": 2}), ("line 5", {"id": 3})]


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson", ".json"])
def test_json_suffixes_are_json_lines(tmp_path: Path, suffix: str, members: list[dict[str, Any]]) -> None:
    path = write_jsonl(tmp_path / f"in{suffix}", members)
    assert [r for _, r in read_all(path)] == members


def test_jsonl_with_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": 1}\n')
    assert read_all(path) == [("line 1", {"id": 1})]


def test_csv_header_is_line_one_and_cells_stay_strings(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", ["id", "name", "score"], [["1", "ann", "0.5"], ["2", "", "NA"]])
    assert read_all(path) == [
        ("line 2", {"id": "1", "name": "ann", "score": "0.5"}),
        ("line 3", {"id": "2", "name": "", "score": "NA"}),
    ]


def test_csv_positions_count_physical_lines_across_quoted_newlines_and_blanks(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('id,note\n1,"two\nlines"\n\n2,plain\n')
    assert read_all(path) == [("line 2", {"id": "1", "note": "two\nlines"}), ("line 5", {"id": "2", "note": "plain"})]


def test_csv_header_names_are_trimmed(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id , name\n1,ann\n")
    assert read_all(path) == [("line 2", {"id": "1", "name": "ann"})]


def test_empty_files_have_no_records(tmp_path: Path) -> None:
    for name in ("empty.jsonl", "empty.csv"):
        (tmp_path / name).write_bytes(b"")
        assert read_all(tmp_path / name) == []
    header_only = tmp_path / "header.csv"
    header_only.write_text("id,name\n")
    assert read_all(header_only) == []


def test_avro_records_are_numbered_from_one(tmp_path: Path, members: list[dict[str, Any]]) -> None:
    path = write_avro(tmp_path / "in.avro", MEMBER_AVRO_SCHEMA, members)
    assert read_all(path) == [(f"record {i}", m) for i, m in enumerate(members, 1)]


def test_parquet_records_are_numbered_across_row_groups_and_batches(tmp_path: Path) -> None:
    rows = [{"id": i, "name": f"m{i}", "emb": [float(i), 0.5]} for i in range(5000)]
    path = write_parquet(tmp_path / "in.parquet", rows, row_group_size=700)
    got = read_all(path)
    assert len(got) == 5000
    assert got[0] == ("record 1", rows[0])
    assert got[4999] == ("record 5000", rows[4999])


def test_parquet_nested_struct_comes_out_as_dict(tmp_path: Path) -> None:
    rows = [{"id": 1, "addr": {"city": "x", "zip": 10}}, {"id": 2, "addr": None}]
    assert [r for _, r in read_all(write_parquet(tmp_path / "n.parquet", rows))] == rows


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "avro", "parquet"])
def test_gzipped_input_of_every_format(tmp_path: Path, fmt: str, members: list[dict[str, Any]]) -> None:
    plain = write_all_formats(tmp_path, members)[fmt]
    compressed = gzip_file(plain)
    assert read_all(compressed) == read_all(plain)
    with open_records(compressed) as source:
        assert source.compressed and source.fmt == fmt


def write_all_formats(tmp_path: Path, members: list[dict[str, Any]]) -> dict[str, Path]:
    return {
        "jsonl": write_jsonl(tmp_path / "m.jsonl", members),
        "csv": write_csv(tmp_path / "m.csv", ["id", "name"], [[str(m["id"]), m["name"]] for m in members]),
        "avro": write_avro(tmp_path / "m.avro", MEMBER_AVRO_SCHEMA, members),
        "parquet": write_parquet(tmp_path / "m.parquet", members),
    }


def test_explicit_format_overrides_the_name(tmp_path: Path) -> None:
    path = tmp_path / "export.txt"
    path.write_text("id,name\n1,ann\n")
    assert read_all(path, "csv") == [("line 2", {"id": "1", "name": "ann"})]
    assert detect_format("x.data", "JSON") == "jsonl"
    assert detect_format("x.CSV.gz") == "csv"


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "avro", "parquet"])
def test_size_and_bytes_read_track_progress(tmp_path: Path, fmt: str) -> None:
    members = [{"id": i, "name": f"member-{i}", "score": i / 3, "emb": [0.1], "tags": []} for i in range(3000)]
    files = write_all_formats(tmp_path, members)
    path = files[fmt]
    with open_records(path) as source:
        assert source.size == path.stat().st_size
        iterator = iter(source)
        next(iterator)
        middle = [source.bytes_read for i, _ in zip(range(1500), iterator, strict=False)][-1]
        assert 0 <= middle <= source.size
        for _ in iterator:
            pass
        assert source.bytes_read == source.size


# -- malformed input --------------------------------------------------------------------


def test_bad_json_line_names_file_line_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1}\n\n{"id": 2,}\n')
    message = error_of(path)
    assert message.startswith(f"{path}: line 3: invalid JSON")


def test_json_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1}\n[1, 2]\n')
    assert error_of(path) == f"{path}: line 2: expected a JSON object on each line, got an array"


def test_csv_row_with_wrong_number_of_cells(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,name,score\n1,ann,0.5\n2,bob\n")
    assert error_of(path) == f"{path}: line 3: expected 3 cells as in the header, got 2"


def test_csv_row_with_too_many_cells_after_a_blank_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,name\n1,ann\n\n2,bob,extra\n")
    assert error_of(path) == f"{path}: line 4: expected 2 cells as in the header, got 3"


def test_csv_header_with_duplicate_or_empty_column(tmp_path: Path) -> None:
    dup = tmp_path / "dup.csv"
    dup.write_text("id,name,id\n1,a,1\n")
    assert error_of(dup) == f"{dup}: line 1: column 'id' appears twice in the header"
    empty = tmp_path / "empty.csv"
    empty.write_text("id,,score\n1,a,1\n")
    assert "line 1: header column 2 has no name" in error_of(empty)


def test_csv_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("id,name\n1,ann\n2,Jos\xe9\n".encode("latin-1"))
    assert error_of(path).startswith(f"{path}: line 3: not UTF-8 text")


def test_corrupt_avro_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.avro"
    path.write_bytes(b"this is not avro at all")
    assert error_of(path).startswith(f"{path}: record 1: not a readable Avro object container file")


def test_truncated_avro_file(tmp_path: Path) -> None:
    members = [{"id": i, "name": "x" * 50, "score": 0.0, "emb": [], "tags": []} for i in range(200)]
    path = write_avro(tmp_path / "t.avro", MEMBER_AVRO_SCHEMA, members)
    path.write_bytes(path.read_bytes()[:-100])
    message = error_of(path)
    assert message.startswith(f"{path}: record 1: corrupt Avro data")  # one block: it fails whole


def test_corrupt_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 garbage garbage")
    assert error_of(path).startswith(f"{path}: record 1: not a readable Parquet file")


def test_truncated_gzip(tmp_path: Path) -> None:
    plain = write_jsonl(tmp_path / "m.jsonl", [{"id": i, "pad": "y" * 100} for i in range(500)])
    compressed = gzip_file(plain)
    compressed.write_bytes(compressed.read_bytes()[:-200])
    message = error_of(compressed)
    assert message.startswith(f"{compressed}: line ")
    assert "cannot read the file" in message


def test_gzip_with_garbage_inside(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(b"\x1f\x8b" + b"\x00" * 30)
    assert error_of(path).startswith(f"{path}: line 1:")


def test_missing_file_directory_and_unknown_format(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    assert error_of(missing) == f"{missing}: no such file"
    assert error_of(tmp_path, "csv") == f"{tmp_path}: is a directory, not a file"
    odd = tmp_path / "data.xlsx"
    odd.write_bytes(b"x")
    assert "cannot tell the format from the file name" in error_of(odd)
    with pytest.raises(InvalidInputError, match="unknown input format 'xml'"):
        open_records(odd, "xml")


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    path = tmp_path / "sneaky.jsonl"
    path.write_bytes(gzip.compress(b'{"id": 1}\n'))
    assert read_all(path) == [("line 1", {"id": 1})]


def test_bundled_sample_reads(members: list[dict[str, Any]]) -> None:
    sample = Path(__file__).resolve().parents[2] / "venice" / "data" / "member_features.jsonl.gz"
    records = read_all(sample)
    assert len(records) == 5000
    assert {"member_id", "country", "age", "engagement_score", "sessions_7d", "embedding"} <= set(records[0][1])
    assert any("last_active_days" not in r for _, r in records)
    assert any(r.get("last_active_days", 0) is None for _, r in records)
    assert all(len(r["embedding"]) == 8 for _, r in records)


# -- JSON lines in batches (what the push reads) --------------------------------------------


def read_batches(path: Path, size: int) -> list[list[tuple[str, dict[str, Any]]]]:
    """Every batch's ``(position, record)`` pairs; each batch's numbers match its positions."""
    with open_records(path) as source:
        batches = []
        for batch in source.batches(size):
            assert batch.records is not None
            assert batch.numbers() == [int(position.removeprefix("line ")) for position, _ in batch.records]
            assert [batch.record(i) for i in range(len(batch))] == [record for _, record in batch.records]
            batches.append(batch.records)
        return batches


def batch_error_of(path: Path, size: int) -> str:
    with pytest.raises(InvalidInputError) as caught:
        read_batches(path, size)
    return caught.value.message


@pytest.mark.parametrize("size", [1, 2, 3, 100])
def test_jsonl_batches_keep_physical_line_positions(tmp_path: Path, size: int) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf\n  \n{"id": 1}\n{"id": 2}\n\n{"id": 3}\r\n{"id": 4}\n{"id": 5}')  # BOM, blanks, CRLF, no final newline
    batches = read_batches(path, size)
    assert batches[0] == [("line 3", {"id": 1})]  # the first record alone, however many blank lines before it
    assert [pair for batch in batches for pair in batch] == [
        ("line 3", {"id": 1}), ("line 4", {"id": 2}), ("line 6", {"id": 3}), ("line 7", {"id": 4}), ("line 8", {"id": 5}),
    ]
    assert all(0 < len(batch) <= size for batch in batches[1:])


@pytest.mark.parametrize("size", [1, 4, 100])
def test_jsonl_batches_name_the_first_bad_line(tmp_path: Path, size: int) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1}\n{"id": 2}\n\n{"id": 3,}\n[1, 2]\n')
    assert batch_error_of(path, size).startswith(f"{path}: line 4: invalid JSON")
    path.write_text('{"id": 1}\n{"id": 2}\n"text"\n{"id": 3,}\n')
    assert batch_error_of(path, size) == f"{path}: line 3: expected a JSON object on each line, got a string"


def test_jsonl_batches_of_a_truncated_gzip_name_a_line(tmp_path: Path) -> None:
    plain = write_jsonl(tmp_path / "m.jsonl", [{"id": i, "pad": "y" * 100} for i in range(500)])
    compressed = gzip_file(plain)
    compressed.write_bytes(compressed.read_bytes()[:-200])
    message = batch_error_of(compressed, 64)
    assert message.startswith(f"{compressed}: line ")
    assert "cannot read the file" in message


def test_jsonl_batches_of_blank_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_text("\n   \n\n")
    assert read_batches(path, 2) == []
