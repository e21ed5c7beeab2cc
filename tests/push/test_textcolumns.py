"""CSV cells typed column-wise (venice/push/textcolumns.py via ColumnarEncoder.encode_csv)
against the exact path (RecordConverter with CSV rules + fastavro, record by record):
the same bytes for every batch either accepts, the same error for every batch either
refuses, and the vectorized path taken for clean batches."""

from __future__ import annotations

import pytest

from venice.errors import InvalidInputError
from venice.push.columnar import ColumnarEncoder
from venice.schema import AvroCodec

SCHEMA = {
    "type": "record",
    "name": "R",
    "fields": [
        {"name": "l", "type": "long"},
        {"name": "i", "type": "int"},
        {"name": "d", "type": "double"},
        {"name": "f", "type": "float"},
        {"name": "b", "type": "boolean"},
        {"name": "s", "type": "string"},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
        {"name": "nl", "type": ["null", "long"], "default": None},
        {"name": "nd", "type": ["null", "double"], "default": None},
        {"name": "ns", "type": ["null", "string"], "default": None},
        {"name": "nb", "type": ["boolean", "null"], "default": False},
        {"name": "af", "type": {"type": "array", "items": "float"}},
        {"name": "nal", "type": ["null", {"type": "array", "items": "long"}], "default": None},
    ],
}
COLUMNS = ["key", "l", "i", "d", "f", "b", "s", "e", "nl", "nd", "ns", "nb", "af", "nal"]
CLEAN = ["k0", "-12", "7", "1.25", "0.1", "true", "text", "A", "5", "2e-3", "word", "false", "[0.5, 1]", "[1, 2]"]

HOSTILE = {
    "key": ["  ", "", " k ", "ключ", "k\x00"],
    "l": ["+1", " 1", "1.0", "1e3", "1_000", "١", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
          "99999999999999999999", "NA", "", "0x10", "--1"],
    "i": ["2147483648", "-2147483649", "2147483647", "NA"],
    "d": ["nan", "NaN", "inf", "-Infinity", "+1.5", ".5", "5.", "1e400", "1e-400", "-0", "1,5", " 1.5", "NA", "1.5e"],
    "f": ["1e39", "3.4028235e38", "1e-50", "nan"],
    "b": ["TRUE", "1", "0", "yes", " true", "True ", "NA", ""],
    "s": ["", "NA", " spaced ", "é", "\u2028", "null"],
    "e": ["C", "a", "", "NA"],
    "nl": ["NA", "na", "N/A", "null", "None", "nan", "", " NA ", "\tnull", "NA\u00a0", "\u3000", "x", "12"],
    "nd": ["NaN", "nan", "none", "inf", "1.5", "NULL "],
    "ns": ["NA", "Na", "nA", " n/a", "None\u2003", "\u00a0", "ǹull", "NULL", "value", "İ"],
    "nb": ["NA", "true", "TRUE", "maybe"],
    "af": ["[]", "[true]", "[1, 2.5]", "[\"1\"]", "[null]", "1", "NA", "[1e400]", "[9007199254740993]", "{}", "[1,"],
    "nal": ["NA", "[1.5]", "[true]", "[9223372036854775808]", "[]", "[-1]", "none"],
}


def encoder() -> ColumnarEncoder:
    return ColumnarEncoder(AvroCodec("string", kind="key"), AvroCodec(SCHEMA), text_cells=True, file="t.csv")


def both(rows: list[list[str]]) -> tuple[object, object, bool]:
    """(vectorized-or-fallback answer, exact answer, whether the batch went vectorized):
    an answer is (keys, values) or the error message."""
    def position(i: int) -> str:
        return f"line {i + 2}"

    fast = encoder()
    try:
        got = fast.encode_csv(COLUMNS, rows, position)
        fast_answer: object = (got.keys.to_pylist(), got.values.to_pylist())
    except InvalidInputError as exc:
        fast_answer = exc.message
    try:
        exact = encoder().encode_rows((position(i), dict(zip(COLUMNS, row, strict=True))) for i, row in enumerate(rows))
        exact_answer: object = (exact.keys.to_pylist(), exact.values.to_pylist())
    except InvalidInputError as exc:
        exact_answer = exc.message
    return fast_answer, exact_answer, fast.vectorized_batches == 1


def test_clean_rows_are_vectorized_and_byte_identical() -> None:
    rows = [[f"k{n}", *CLEAN[1:]] for n in range(50)]
    rows[3][8], rows[4][9], rows[5][10], rows[6][11], rows[7][13] = "NA", "", "null", "N/A", "NA"
    fast, exact, vectorized = both(rows)
    assert vectorized
    assert fast == exact
    assert isinstance(fast, tuple) and len(fast[0]) == 50


@pytest.mark.parametrize(("column", "cell"), [(c, v) for c, cells in HOSTILE.items() for v in cells])
def test_a_hostile_cell_reads_as_the_exact_path_reads_it(column: str, cell: str) -> None:
    rows = [[f"k{n}", *CLEAN[1:]] for n in range(5)]
    rows[2][COLUMNS.index(column)] = cell
    fast, exact, _ = both(rows)
    assert fast == exact


def test_a_missing_column_gets_the_default_and_an_extra_one_is_refused() -> None:
    columns = [c for c in COLUMNS if c != "ns"]
    rows = [[c for c, name in zip(CLEAN, COLUMNS, strict=True) if name != "ns"]]
    fast = encoder().encode_csv(columns, rows, lambda i: f"line {i + 2}")
    exact = encoder().encode_rows([("line 2", dict(zip(columns, rows[0], strict=True)))])
    assert fast.values.to_pylist() == exact.values.to_pylist()
    with pytest.raises(InvalidInputError, match="line 2: field\\(s\\) not in the value schema: extra"):
        encoder().encode_csv([*COLUMNS, "extra"], [[*CLEAN, "x"]], lambda i: f"line {i + 2}")
