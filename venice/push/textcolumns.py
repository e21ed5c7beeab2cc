"""CSV text cells to typed Arrow columns, for the vectorized encoder (venice/push/columnar.py).

A CSV push coerces every text cell to the schema's type (:func:`venice.push.records.text_coercer`):
``"42"`` to a long, ``"NA"`` to null where the field is nullable, ``"[0.5, 1]"`` (JSON
text) to an array. Doing that cell by cell in Python, then encoding record by record,
is most of a CSV push's CPU. Here a batch of rows becomes typed Arrow columns at once:

* a cell is taken only where it is *proven* to read as the exact path reads it: ints
  and doubles must match the grammar of :func:`venice.schema.parse_integer` /
  :func:`venice.schema.parse_double` (a regex over the whole column, then Arrow's
  cast); a missing marker (:data:`~venice.push.records.MISSING_MARKERS`) is recognised
  exactly as :func:`~venice.push.records.is_missing` does (cells that are not plain
  printable ASCII are asked to that function itself); JSON cells of arrays of numbers
  are parsed with orjson as the exact path parses them;
* any cell that is not proven (a bad number, ``nan``, ``+1``, a missing marker where
  the field is not nullable, a union of several types, a map, a record, ...) makes
  :func:`typed_batch` return ``None``, and the caller sends the batch down the exact
  path, which accepts or rejects it, with the message and position it always gave.

So a CSV batch is either encoded from these columns, byte for byte what the exact
path writes, or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from venice.push.records import MISSING_MARKERS, is_missing

__all__ = ["typed_batch"]

_LONG = r"^-?[0-9]{1,19}$"
""":func:`venice.schema.parse_integer`: ASCII digits with an optional '-', at most 19 of them
(larger values do not fit a long: Arrow's cast refuses them, so the batch goes exact)."""
_DOUBLE = r"^-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"
""":data:`venice.schema._DOUBLE_TEXT` anchored (``nan``/``inf`` spellings take the exact path)."""
_PLAIN = r"^(?:[!-~](?:.*[!-~])?)?$"
"""Empty, or starting and ending with printable non-space ASCII: ``strip()`` leaves it as it is."""
_TRUE, _FALSE = pa.array(["true", "1"]), pa.array(["false", "0"])
_MARKERS = pa.array(sorted(MISSING_MARKERS))
_SIMPLE = ("long", "int", "double", "float", "boolean", "string", "enum")


def _all(mask: pa.Array | pa.ChunkedArray) -> bool:
    return bool(pc.all(mask).as_py()) if len(mask) else True


def _missing(column: pa.Array) -> np.ndarray:
    """:func:`is_missing` of every cell: vectorized for plain ASCII cells (where ``strip`` is
    the identity and ``lower`` is ASCII's), asked of the function itself for the others."""
    plain = pc.and_(pc.string_is_ascii(column), pc.match_substring_regex(column, _PLAIN))
    missing = np.asarray(pc.is_in(pc.ascii_lower(column), value_set=_MARKERS).to_numpy(zero_copy_only=False), dtype=bool)
    if not _all(plain):
        odd = np.flatnonzero(~np.asarray(plain.to_numpy(zero_copy_only=False), dtype=bool))
        cells = column.take(pa.array(odd)).to_pylist()
        missing[odd] = [is_missing(cell) for cell in cells]
    return missing


def _simple(kind: str, column: pa.Array) -> pa.Array | None:
    """``column`` (no missing cells in it) as the Arrow type the encoder takes for ``kind``."""
    try:
        if kind in ("long", "int"):
            if not _all(pc.match_substring_regex(column, _LONG)):
                return None
            return pc.cast(column, pa.int64())
        if kind in ("double", "float"):
            if not _all(pc.match_substring_regex(column, _DOUBLE)):
                return None
            return pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if kind == "boolean":
        if not _all(pc.match_substring_regex(column, _PLAIN)):
            return None
        lower = pc.ascii_lower(column)
        true, false = pc.is_in(lower, value_set=_TRUE), pc.is_in(lower, value_set=_FALSE)
        if not _all(pc.or_(true, false)):
            return None
        return true
    if kind in ("string", "enum"):
        return column
    return None


def _number_arrays(cells: list[str | None], item_kind: str) -> pa.Array | None:
    """JSON text of arrays of numbers (nulls left null) as ``list<double>`` / ``list<int64>``."""
    parsed: list[Any] = []
    floats = item_kind in ("double", "float")
    number_types = (int, float) if floats else (int,)
    for cell in cells:
        if cell is None:
            parsed.append(None)
            continue
        try:
            value = orjson.loads(cell)
        except orjson.JSONDecodeError:
            return None
        if type(value) is not list or not all(type(x) in number_types for x in value):
            return None  # not an array, or a bool/str/null inside: the exact path says what
        parsed.append(value)
    try:
        return pa.array(parsed, pa.list_(pa.float64() if floats else pa.int64()))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None


def _column(schema: Any, column: pa.Array, *, key: bool) -> pa.Array | None:
    nullable = False
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        if len(branches) != 1 or len(branches) == len(schema) or key:
            return None
        nullable, schema = True, branches[0]
    kind = schema if isinstance(schema, str) else schema.get("type") if isinstance(schema, dict) else None
    if isinstance(schema, dict) and "logicalType" in schema:
        return None
    if key and not _all(pc.match_substring_regex(column, r"[!-~]")):
        return None  # a key cell must hold something besides whitespace ("missing key field" otherwise)
    if kind == "array" and isinstance(schema, dict) and schema.get("items") in ("double", "float", "long", "int"):
        if nullable:
            missing = _missing(column)
            cells = [None if m else c for m, c in zip(missing.tolist(), column.to_pylist(), strict=True)]
        else:
            cells = column.to_pylist()
        return _number_arrays(cells, str(schema["items"]))
    if kind not in _SIMPLE or (isinstance(schema, dict) and kind != "enum"):
        return None  # records, maps, fixed, bytes, named references: the exact path
    if not nullable:
        return _simple(str(kind), column)
    missing = _missing(column)
    if not missing.any():
        return _simple(str(kind), column)
    present = np.flatnonzero(~missing)
    typed = _simple(str(kind), column.take(pa.array(present)))
    if typed is None:
        return None
    # scatter the present cells back among nulls
    out_index = np.full(len(column), -1, np.int64)
    out_index[present] = np.arange(len(present))
    return typed.take(pa.array(out_index, mask=missing))


def typed_batch(
    columns: Sequence[str], rows: Sequence[Sequence[str]], fields: dict[str, Any], key_fields: Sequence[str]
) -> pa.RecordBatch | None:
    """The CSV ``rows`` (lists of cells under ``columns``) as typed columns, or ``None`` when
    any cell is not proven to read as the exact path would read it.

    ``fields`` maps column names to Avro types (key and value fields); a column it does not
    name, or a named type it cannot see through, gives ``None`` (the exact path reports it).
    """
    if not rows or len(set(columns)) != len(columns):
        return None
    arrays = []
    transposed = list(zip(*rows, strict=True))
    for name, cells in zip(columns, transposed, strict=True):
        schema = fields.get(name)
        if schema is None:
            return None
        column = pa.array(cells, pa.string())
        typed = _column(schema, column, key=name in key_fields)
        if typed is None:
            return None
        arrays.append(typed)
    return pa.RecordBatch.from_arrays(arrays, names=list(columns))
