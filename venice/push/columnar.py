"""Avro binary encoding of whole columns: the vectorized encoder of the push path.

A push of Parquet, Avro or a DataFrame holds its records in columns already. Encoding
them one record at a time (fastavro's ``schemaless_writer`` on a dict) costs a few µs
per record in Python; the Avro binary encoding is simple enough to build for a whole
column at once with numpy instead:

* ``int``/``long``: zig-zag varints, computed for every row at once;
* ``float``/``double``: the column's IEEE bytes (a cast, then a byte view);
* ``string``/``bytes``: a varint length before the column's own UTF-8/byte buffer;
* ``boolean``, ``enum`` (symbol index), ``fixed`` (the bytes themselves);
* nullable unions (``["null", T]`` in either order): a branch index, then ``T``;
* arrays of any of these (small float arrays: a count, the raw floats, a zero);
* records (Arrow structs), nested as deep as the schema goes.

Every encoder yields, per row, a byte string as two numpy arrays (lengths and the
bytes back to back); a record is the row-wise concatenation of its fields.

**Validation equals the single-process push's.** The vectorized path only takes a
batch it can *prove* valid from its Arrow types and a few column checks (no null
where the schema has none, ints in range, enum symbols known, fixed sizes right,
no column the schemas do not name). Anything else (an unexpected type, a map, a
logical type, a union of several types, a failed check) sends the whole batch down
the exact path: each row through :class:`~venice.push.records.RecordConverter` and
:class:`~venice.schema.AvroCodec`, which is what ``venice push`` does, so the same
records pass, the same fail, and a failure is reported with the same message and the
row's position. Both paths give the bytes fastavro's ``schemaless_writer`` gives.

Nothing here knows about Spark or files: it takes a pyarrow RecordBatch or Table (or
a pandas DataFrame) and gives Arrow binary arrays of keys and values.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from venice.errors import InvalidInputError
from venice.push.formats import input_error
from venice.push.records import DEFAULT_KEY_FIELD, VALUE_FIELD, RecordConverter
from venice.schema import AvroCodec

__all__ = ["ColumnarEncoder", "EncodedBatch", "to_record_batch"]

Position = Callable[[int], str]
"""Row index in the batch -> what a human needs to find the row (``"record 17"``)."""


@dataclass(frozen=True)
class EncodedBatch:
    """Avro binary keys and values of one batch, row for row."""

    keys: pa.Array
    """``binary`` (or ``large_binary``) array: the key of each row, serialized."""
    values: pa.Array
    """The value of each row, serialized."""
    vectorized: bool
    """Whether the columns were encoded at once (``False``: record by record)."""

    def __len__(self) -> int:
        return len(self.keys)


def to_record_batch(data: pa.RecordBatch | pa.Table | Any) -> pa.RecordBatch:
    """One RecordBatch of a batch, a table or a pandas DataFrame.

    A pandas NaN stays a NaN (not a null), as it would in ``df.to_dict("records")``;
    ``None`` and pandas' missing markers of nullable dtypes are nulls.
    """
    if isinstance(data, pa.RecordBatch):
        return data
    if isinstance(data, pa.Table):
        return data.combine_chunks().to_batches()[0] if data.num_rows else pa.RecordBatch.from_pylist([], schema=data.schema)
    columns = getattr(data, "columns", None)
    if columns is None or not hasattr(data, "iloc"):
        raise TypeError(f"expected a pyarrow RecordBatch or Table or a pandas DataFrame, got {type(data).__name__}")
    names = [str(c) for c in columns]
    arrays = [pa.array(data[c], from_pandas=False) for c in columns]
    return pa.RecordBatch.from_arrays(arrays, names=names)


class ColumnarEncoder:
    """Validates and encodes batches of input rows into keys and values of a store.

    Which columns make the key and the value follows
    :class:`~venice.push.records.RecordConverter`: a record key takes the columns named
    like its fields, another key the column ``key_field`` (default ``"key"``); a record
    value takes its fields by name (an absent column gets the field's default), another
    value the column ``"value"``; any other column is an error, not dropped.

    ``text_cells=True`` (CSV) coerces string cells to the schema's types as ``venice push``
    does; such rows always take the exact path.

    Errors are the :class:`~venice.errors.InvalidInputError` of the exact path, naming
    ``file`` and the position ``position(i)`` of the first bad row.
    """

    def __init__(
        self,
        key_codec: AvroCodec,
        value_codec: AvroCodec,
        *,
        key_field: str | None = None,
        text_cells: bool = False,
        file: str = "<input>",
    ) -> None:
        self.key_codec = key_codec
        self.value_codec = value_codec
        self.text_cells = text_cells
        self.converter = RecordConverter(key_codec, value_codec, key_field=key_field, text_cells=text_cells, file=file)
        self._key_field = key_field or DEFAULT_KEY_FIELD
        self._plans: dict[tuple[pa.Schema, bool, bool], _Plan | None] = {}
        self.vectorized_batches = 0
        """Batches encoded column-wise so far (the rest went record by record)."""
        self.exact_batches = 0

    def encode(self, data: pa.RecordBatch | pa.Table | Any, position: Position | None = None) -> EncodedBatch:
        """Keys and values of every row of ``data``; raises on the first invalid row."""
        batch = to_record_batch(data)
        where = position or _record_number
        plan = self._plan(batch.schema)
        if plan is not None and batch.num_rows:
            encoded = plan.encode(batch)
            if encoded is not None:
                self.vectorized_batches += 1
                return EncodedBatch(_binary(encoded[0]), _binary(encoded[1]), vectorized=True)
        self.exact_batches += 1
        return self._exact(batch, where)

    def encode_records(self, records: Sequence[tuple[str, dict[str, Any]]]) -> EncodedBatch:
        """Keys and values of ``(position, record)`` pairs of a row format (JSON lines).

        The records are put in columns (Arrow's type inference over the union of their
        fields) and take the vectorized path when they can. An absent field and a null
        both become a null there, so a null is only taken where the two mean the same
        (a nullable field whose default is null); anything else, or a type Arrow would
        have coerced (a boolean among numbers), sends the records one by one through the
        exact path, which sees the records as they were.
        """
        if records and not self.text_cells:
            encoded = self._records_at_once([record for _, record in records])
            if encoded is not None:
                self.vectorized_batches += 1
                return encoded
        self.exact_batches += 1
        return self.encode_rows(records)

    def encode_csv(self, columns: Sequence[str], rows: Sequence[Sequence[str]], position: Position) -> EncodedBatch:
        """Keys and values of CSV ``rows`` (lists of text cells under ``columns``).

        The cells are typed column by column (:func:`venice.push.textcolumns.typed_batch`,
        which takes a cell only where it reads exactly as the CSV rules read it) and take
        the vectorized path; a batch with any cell it cannot prove goes row by row
        through the exact path with CSV rules (``text_cells=True``), which words any error
        with ``position(i)`` of the row.
        """
        from venice.push.textcolumns import typed_batch

        key_spec, value_spec = self._key_spec(), self._value_spec()
        if key_spec is not None and value_spec is not None and rows:
            fields = {f["name"]: f["type"] for f in value_spec} | {f["name"]: f["type"] for f in key_spec}
            typed = typed_batch(columns, rows, fields, [f["name"] for f in key_spec])
            plan = self._plan(typed.schema, typed_text=True) if typed is not None else None
            encoded = plan.encode(typed) if plan is not None and typed is not None else None
            if encoded is not None:
                self.vectorized_batches += 1
                return EncodedBatch(_binary(encoded[0]), _binary(encoded[1]), vectorized=True)
        self.exact_batches += 1
        return self.encode_rows((position(i), dict(zip(columns, row, strict=True))) for i, row in enumerate(rows))

    def _records_at_once(self, records: list[dict[str, Any]]) -> EncodedBatch | None:
        try:
            batch = pa.RecordBatch.from_struct_array(pa.array(records))
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            return None  # mixed types, huge ints, not dicts...: the exact path says what is wrong
        if batch.num_columns == 0 or _bool_among_floats(records, batch):
            return None
        plan = self._plan(batch.schema, absent_as_null=True)

        def presence(name: str) -> np.ndarray:
            return np.fromiter((name in record for record in records), bool, len(records))

        encoded = plan.encode(batch, presence) if plan is not None else None
        if encoded is None:
            return None
        return EncodedBatch(_binary(encoded[0]), _binary(encoded[1]), vectorized=True)

    def encode_rows(self, rows: Iterable[tuple[str, dict[str, Any]]]) -> EncodedBatch:
        """Keys and values of ``(position, record)`` pairs, record by record (the exact path)."""
        keys, values = [], []
        convert = self.converter.convert
        encode_key, encode_value = self.key_codec.encode_unchecked, self.value_codec.encode_unchecked
        for position, record in rows:
            key, value = convert(position, record)
            keys.append(encode_key(key))
            values.append(encode_value(value))
        return EncodedBatch(pa.array(keys, pa.binary()), pa.array(values, pa.binary()), vectorized=False)

    # -- exact path --------------------------------------------------------------------

    def _exact(self, batch: pa.RecordBatch, position: Position) -> EncodedBatch:
        try:
            rows = batch.to_pylist()
        except (ValueError, pa.ArrowException) as exc:  # e.g. a string column holding bad UTF-8
            raise self._unreadable(batch, position, exc) from None
        return self.encode_rows((position(i), row) for i, row in enumerate(rows))

    def _unreadable(self, batch: pa.RecordBatch, position: Position, exc: Exception) -> InvalidInputError:
        """The error for the first row Arrow cannot turn into Python values."""
        for index in range(batch.num_rows):
            try:
                batch.slice(index, 1).to_pylist()
            except (ValueError, pa.ArrowException) as row_exc:
                return input_error(self.converter.file, position(index), f"cannot read the row: {row_exc}")
        return input_error(self.converter.file, position(0), f"cannot read the batch: {exc}")

    # -- vectorized path -----------------------------------------------------------------

    def _plan(self, schema: pa.Schema, *, absent_as_null: bool = False, typed_text: bool = False) -> _Plan | None:
        """The vectorized plan for batches of ``schema``; ``absent_as_null``: the batch was
        built from records, where a null may stand for an absent field; ``typed_text``: the
        batch holds CSV cells already typed by :func:`venice.push.textcolumns.typed_batch`."""
        cache_key = (schema, absent_as_null, typed_text)
        if cache_key not in self._plans:
            if len(self._plans) > 64:
                self._plans.clear()  # records of ever-changing shapes: do not hoard plans
            self._plans[cache_key] = self._build_plan(schema, absent_as_null, typed_text)
        return self._plans[cache_key]

    def _build_plan(self, schema: pa.Schema, absent_as_null: bool, typed_text: bool = False) -> _Plan | None:
        if self.text_cells and not typed_text:
            return None  # text cells are coerced one by one (CSV rules), or typed first (encode_csv)
        names = schema.names
        if len(set(names)) != len(names):
            return None  # a dict per row would keep only one of them: let the exact path decide
        types = dict(zip(names, schema.types, strict=True))
        named = _named(self.key_codec.schema) | _named(self.value_codec.schema)
        key_fields = self._key_spec()
        value_fields = self._value_spec()
        if key_fields is None or value_fields is None:
            return None
        known = {f["name"] for f in key_fields} | {f["name"] for f in value_fields}
        if set(names) - known:
            return None  # extra columns: an error the exact path words
        key_plan = _fields_plan(key_fields, types, named, key=True, absent_as_null=absent_as_null)
        value_plan = _fields_plan(value_fields, types, named, key=False, absent_as_null=absent_as_null)
        if key_plan is None or value_plan is None:
            return None
        return _Plan(key_plan, value_plan)

    def _key_spec(self) -> list[dict[str, Any]] | None:
        schema = self.key_codec.schema
        if self.converter.key_is_record:
            return list(schema["fields"])
        return [{"name": self._key_field, "type": schema}]

    def _value_spec(self) -> list[dict[str, Any]] | None:
        schema = self.value_codec.schema
        if self.converter.value_is_record:
            return list(schema["fields"])
        return [{"name": VALUE_FIELD, "type": schema}]


def _record_number(index: int) -> str:
    return f"record {index + 1}"


# --- segments: one byte string per row, as numpy arrays ---------------------------------


class _Seg(NamedTuple):
    lengths: np.ndarray
    """int64, the byte length of each row's encoding."""
    data: np.ndarray
    """uint8, every row's bytes back to back, in row order."""


_Rows = np.ndarray | None
"""Which rows matter (bool mask); the others are encoded as nothing and not checked."""

_EMPTY = np.zeros(0, np.uint8)


def _masked(seg: _Seg, rows: _Rows) -> _Seg:
    """``seg`` with the rows outside ``rows`` made empty."""
    if rows is None or rows.all():
        return seg
    keep = np.repeat(rows, seg.lengths)
    return _Seg(np.where(rows, seg.lengths, 0), seg.data[keep])


def _varint(values: np.ndarray) -> _Seg:
    """Zig-zag varints (Avro ``int``/``long``) of int64 ``values``."""
    signed = values.astype(np.int64, copy=False)
    zigzag = ((signed << 1) ^ (signed >> 63)).view(np.uint64)
    count = len(zigzag)
    nbytes = np.ones(count, np.int64)
    for k in range(1, 10):
        more = zigzag >= np.uint64(1 << (7 * k))
        if not more.any():
            break
        nbytes += more
    width = int(nbytes.max()) if count else 1
    if width == 1:
        return _Seg(nbytes, zigzag.astype(np.uint8))
    table = np.empty((count, width), np.uint8)
    for k in range(width):
        byte = ((zigzag >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        table[:, k] = byte | np.where(nbytes > k + 1, 0x80, 0).astype(np.uint8)
    return _Seg(nbytes, table[np.arange(width) < nbytes[:, None]])


def _fixed_width(data: np.ndarray, width: int, count: int) -> _Seg:
    return _Seg(np.full(count, width, np.int64), data)


def _concat(parts: list[_Seg]) -> _Seg:
    """Row-wise concatenation: row i of the result is row i of each part in turn (in C++,
    as Arrow's element-wise binary join)."""
    parts = [p for p in parts if p.data.size] or parts[:1]
    if len(parts) == 1:
        return parts[0]
    joined = pc.binary_join_element_wise(*[_large_binary(p) for p in parts], pa.scalar(b"", pa.large_binary()))
    return _Seg(*_binary_parts(joined))


def _large_binary(seg: _Seg) -> pa.Array:
    offsets = np.zeros(len(seg.lengths) + 1, np.int64)
    np.cumsum(seg.lengths, out=offsets[1:])
    return pa.Array.from_buffers(pa.large_binary(), len(seg.lengths), [None, pa.py_buffer(offsets), pa.py_buffer(seg.data)])


def _binary(seg: _Seg) -> pa.Array:
    """An Arrow binary array of the rows of ``seg`` (no copy of the bytes)."""
    offsets = np.zeros(len(seg.lengths) + 1, np.int64)
    np.cumsum(seg.lengths, out=offsets[1:])
    if offsets[-1] < 2**31:
        return pa.Array.from_buffers(pa.binary(), len(seg.lengths), [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(seg.data)])
    return pa.Array.from_buffers(pa.large_binary(), len(seg.lengths), [None, pa.py_buffer(offsets), pa.py_buffer(seg.data)])


# --- column checks -------------------------------------------------------------------------


def _nulls(array: pa.Array) -> np.ndarray | None:
    """The null mask of ``array``, or ``None`` when it has no nulls."""
    if array.null_count == 0:
        return None
    return np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _has_null_in(array: pa.Array, rows: _Rows) -> bool:
    nulls = _nulls(array)
    if nulls is None:
        return False
    return bool(nulls.any() if rows is None else (nulls & rows).any())


def _numbers(array: pa.Array, dtype: Any) -> np.ndarray:
    filled = pc.fill_null(array, False if pa.types.is_boolean(array.type) else 0) if array.null_count else array
    return np.asarray(filled.to_numpy(zero_copy_only=False)).astype(dtype, copy=False)


def _selected(values: np.ndarray, rows: _Rows) -> np.ndarray:
    return values if rows is None else values[rows]


def _in_range(values: np.ndarray, rows: _Rows, low: int, high: int) -> bool:
    chosen = _selected(values, rows)
    if not chosen.size:
        return True
    return bool(chosen.min() >= low and chosen.max() <= high)


def _binary_parts(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, bytes) of a string/binary array, without copying its buffer."""
    large = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], np.int64 if large else np.int32)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else _EMPTY
    data = data[int(offsets[0]) : int(offsets[-1])]
    return np.diff(offsets).astype(np.int64), data


# --- encoders: (Avro schema, Arrow type) -> function of (array, rows) ------------------------

_Encoder = Callable[[pa.Array, _Rows], "_Seg | None"]
"""Encodes the rows of an array (zero bytes for rows outside the mask); ``None`` when a
check fails and the batch must take the exact path."""

_INT_BOUNDS = (-(2**31), 2**31 - 1)
_LONG_BOUNDS = (-(2**63), 2**63 - 1)


def _named(schema: Any, found: dict[str, Any] | None = None) -> dict[str, Any]:
    """Named types (records, enums, fixed) of a parsed schema, by name and full name."""
    found = {} if found is None else found
    if isinstance(schema, list):
        for branch in schema:
            _named(branch, found)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "error", "enum", "fixed") and "name" in schema:
            found.setdefault(schema["name"], schema)
        for field in schema.get("fields", ()):
            _named(field["type"], found)
        for inner in ("items", "values"):
            if inner in schema:
                _named(schema[inner], found)
    return found


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        if "logicalType" in schema:
            return "logical"
        return str(schema["type"])
    return str(schema)


def _encoder(schema: Any, atype: pa.DataType, named: dict[str, Any], depth: int = 0, absent_as_null: bool = False) -> _Encoder | None:
    """The vectorized encoder of ``schema`` for Arrow ``atype``, or ``None`` when the pair
    is not one whose validity a column check can prove. ``absent_as_null``: a null in a
    nested record's field may mean the field was absent (records turned into columns)."""
    if depth > 32:
        return None  # a recursive schema: let the exact path handle it
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    kind = _kind(schema)
    if pa.types.is_dictionary(atype):
        inner = _encoder(schema, atype.value_type, named, depth, absent_as_null)
        return None if inner is None else (lambda array, rows: inner(array.dictionary_decode(), rows))
    if kind == "union":
        return _union(schema, atype, named, depth, absent_as_null)
    if kind == "null":
        return _null if pa.types.is_null(atype) else None
    if pa.types.is_null(atype):
        return None
    if kind in _SIMPLE:
        return _SIMPLE[kind](atype)
    if kind == "enum":
        return _enum(schema["symbols"]) if _is_string(atype) else None
    if kind == "fixed":
        return _fixed(int(schema["size"])) if _is_binary(atype) or pa.types.is_fixed_size_binary(atype) else None
    if kind == "array":
        return _array(schema["items"], atype, named, depth, absent_as_null)
    if kind == "record":
        return _struct(schema, atype, named, depth, absent_as_null)
    return None  # map (Arrow maps read as lists of pairs, which fail validation), logical types, ...


def _is_string(atype: pa.DataType) -> bool:
    return bool(pa.types.is_string(atype) or pa.types.is_large_string(atype))


def _is_binary(atype: pa.DataType) -> bool:
    return bool(pa.types.is_binary(atype) or pa.types.is_large_binary(atype))


def _is_integer(atype: pa.DataType) -> bool:
    return bool(pa.types.is_integer(atype))


def _is_float(atype: pa.DataType) -> bool:
    return bool(pa.types.is_float32(atype) or pa.types.is_float64(atype))


def _null(array: pa.Array, rows: _Rows) -> _Seg | None:
    return _Seg(np.zeros(len(array), np.int64), _EMPTY)


def _no_nulls(encode: Callable[[pa.Array, _Rows], _Seg | None]) -> _Encoder:
    """A non-nullable type: a null among the rows that matter fails the batch."""

    def checked(array: pa.Array, rows: _Rows) -> _Seg | None:
        if _has_null_in(array, rows):
            return None
        seg = encode(array, rows)
        return None if seg is None else _masked(seg, rows)

    return checked


def _integer(bounds: tuple[int, int]) -> Callable[[pa.DataType], _Encoder | None]:
    def build(atype: pa.DataType) -> _Encoder | None:
        if not _is_integer(atype):
            return None  # floats and booleans do not validate as Avro int/long

        def encode(array: pa.Array, rows: _Rows) -> _Seg | None:
            if pa.types.is_uint64(atype):
                values = _numbers(array, np.uint64)
                if not _in_range(values, rows, 0, bounds[1]):
                    return None
                values = values.astype(np.int64)
            else:
                values = _numbers(array, np.int64)
                if not _in_range(values, rows, *bounds):
                    return None
            return _varint(values)

        return _no_nulls(encode)

    return build


def _floating(dtype: Any, width: int) -> Callable[[pa.DataType], _Encoder | None]:
    def build(atype: pa.DataType) -> _Encoder | None:
        if not (_is_float(atype) or _is_integer(atype)):
            return None

        def encode(array: pa.Array, rows: _Rows) -> _Seg:
            with np.errstate(over="ignore"):  # beyond float range is inf, as fastavro's C cast
                values = _numbers(array, dtype)
            return _fixed_width(np.ascontiguousarray(values).view(np.uint8), width, len(array))

        return _no_nulls(encode)

    return build


def _boolean(atype: pa.DataType) -> _Encoder | None:
    if not pa.types.is_boolean(atype):
        return None
    return _no_nulls(lambda array, rows: _fixed_width(_numbers(array, np.uint8), 1, len(array)))


def _length_prefixed(check: Callable[[pa.DataType], bool]) -> Callable[[pa.DataType], _Encoder | None]:
    def build(atype: pa.DataType) -> _Encoder | None:
        if not check(atype):
            return None

        def encode(array: pa.Array, rows: _Rows) -> _Seg | None:
            if _is_string(array.type):
                try:
                    array.validate(full=True)  # Arrow strings from elsewhere (a JVM) may hold bad UTF-8
                except pa.ArrowInvalid:
                    return None
            lengths, data = _binary_parts(array)
            return _concat([_varint(lengths), _Seg(lengths, data)])

        return _no_nulls(encode)

    return build


_SIMPLE: dict[str, Callable[[pa.DataType], _Encoder | None]] = {
    "int": _integer(_INT_BOUNDS),
    "long": _integer(_LONG_BOUNDS),
    "float": _floating(np.float32, 4),
    "double": _floating(np.float64, 8),
    "boolean": _boolean,
    "string": _length_prefixed(_is_string),
    "bytes": _length_prefixed(_is_binary),
}


def _enum(symbols: list[str]) -> _Encoder:
    symbol_array = pa.array(symbols, pa.string())

    def encode(array: pa.Array, rows: _Rows) -> _Seg | None:
        index = pc.index_in(array.cast(pa.string()), value_set=symbol_array)
        if _has_null_in(index, rows):
            return None  # an unknown symbol (or a null)
        return _varint(_numbers(index, np.int64))

    return _no_nulls(encode)


def _fixed(size: int) -> _Encoder:
    def encode(array: pa.Array, rows: _Rows) -> _Seg | None:
        if pa.types.is_fixed_size_binary(array.type):
            if array.type.byte_width != size:
                return None
            data = np.frombuffer(array.buffers()[1], np.uint8)[array.offset * size : (array.offset + len(array)) * size]
            return _fixed_width(data, size, len(array))
        lengths, data = _binary_parts(array)
        if not (_selected(lengths, rows) == size).all():
            return None
        return _Seg(lengths, data)

    return _no_nulls(encode)


def _union(branches: list[Any], atype: pa.DataType, named: dict[str, Any], depth: int, absent_as_null: bool) -> _Encoder | None:
    """``["null", T]`` or ``[T, "null"]``; other unions pick a branch per datum (exact path)."""
    if len(branches) != 2 or "null" not in branches:
        return None
    null_index = branches.index("null")
    other = branches[1 - null_index]
    null_byte, other_byte = np.uint8(2 * null_index), np.uint8(2 * (1 - null_index))
    if pa.types.is_null(atype):
        return lambda array, rows: _masked(_fixed_width(np.full(len(array), null_byte, np.uint8), 1, len(array)), rows)
    inner = _encoder(other, atype, named, depth + 1, absent_as_null)
    if inner is None:
        return None

    def encode(array: pa.Array, rows: _Rows) -> _Seg | None:
        nulls = _nulls(array)
        present = rows if nulls is None else (~nulls if rows is None else rows & ~nulls)
        value = inner(array, present)
        if value is None:
            return None
        branch = np.full(len(array), other_byte, np.uint8) if nulls is None else np.where(nulls, null_byte, other_byte)
        return _concat([_masked(_fixed_width(branch, 1, len(array)), rows), value])

    return encode


def _array(items: Any, atype: pa.DataType, named: dict[str, Any], depth: int, absent_as_null: bool) -> _Encoder | None:
    if not (pa.types.is_list(atype) or pa.types.is_large_list(atype) or pa.types.is_fixed_size_list(atype)):
        return None
    item = _encoder(items, atype.value_type, named, depth + 1, absent_as_null)
    if item is None:
        return None

    def encode(array: pa.Array, rows: _Rows) -> _Seg | None:
        if pa.types.is_fixed_size_list(array.type):
            size = array.type.list_size
            offsets = np.arange(len(array) + 1, dtype=np.int64) * size + array.offset * size
        else:
            offsets = np.asarray(array.offsets.to_numpy(zero_copy_only=False), np.int64)
        first = int(offsets[0]) if len(offsets) else 0
        children = array.values.slice(first, int(offsets[-1]) - first)
        counts = np.diff(offsets)
        if rows is not None:
            counts = np.where(rows, counts, 0)
        item_rows = None if rows is None else np.repeat(rows, np.diff(offsets))
        encoded = item(children, item_rows)
        if encoded is None:
            return None
        cumulative = np.zeros(len(encoded.lengths) + 1, np.int64)
        np.cumsum(encoded.lengths, out=cumulative[1:])
        relative = offsets - first
        row_bytes = cumulative[relative[1:]] - cumulative[relative[:-1]]
        header = _masked(_varint(counts), counts > 0)  # an empty array is just the end marker
        ones = np.ones(len(array), np.int64) if rows is None else rows.astype(np.int64)
        end = _Seg(ones, np.zeros(int(ones.sum()), np.uint8))
        return _concat([header, _Seg(row_bytes, encoded.data), end])

    return _no_nulls(encode)


def _struct(schema: dict[str, Any], atype: pa.DataType, named: dict[str, Any], depth: int, absent_as_null: bool) -> _Encoder | None:
    if not pa.types.is_struct(atype):
        return None
    names = [atype.field(i).name for i in range(atype.num_fields)]
    wanted = [f["name"] for f in schema["fields"]]
    if set(names) != set(wanted) or len(names) != len(set(names)):
        return None  # unknown nested fields are refused, absent ones defaulted: the exact path's call
    children: list[tuple[int, _Encoder | None]] = []
    for field in schema["fields"]:
        index = names.index(field["name"])
        child = _encoder(field["type"], atype.field(index).type, named, depth + 1, absent_as_null)
        if child is not None and absent_as_null and not ("default" in field and field["default"] is None):
            # An absent nested field is its default, or invalid without one; a null is null:
            # where they differ a null cannot be told apart, so it is not taken here.
            child = _no_nulls(child)
        children.append((index, child))
    if any(child is None for _, child in children):
        return None

    def encode(array: pa.Array, rows: _Rows) -> _Seg | None:
        parts = []
        for index, child in children:
            assert child is not None
            part = child(array.field(index), rows)
            if part is None:
                return None
            parts.append(part)
        return _concat(parts) if parts else _Seg(np.zeros(len(array), np.int64), _EMPTY)

    return _no_nulls(encode)


# --- top level: which columns make the key and the value --------------------------------------


def _bool_among_floats(records: list[dict[str, Any]], batch: pa.RecordBatch) -> bool:
    """Whether Arrow's inference turned a boolean into a float anywhere in the batch
    (``[1.5, True]`` infers as doubles; fastavro refuses ``True`` for a double).

    Such a float reads 0.0 or 1.0, so only the records holding one are looked at again."""
    for name, field in zip(batch.schema.names, batch.schema, strict=True):
        if not _has_floats(field.type):
            continue
        for row in _zero_or_one_rows(batch.column(name)):
            if _bool_where_float(records[row].get(name), field.type):
                return True
    return False


def _zero_or_one_rows(array: pa.Array) -> np.ndarray:
    """Rows of ``array`` with a float 0.0 or 1.0 somewhere inside."""
    atype = array.type
    if pa.types.is_floating(atype):
        values = _numbers(array, np.float64)
        return np.flatnonzero((values == 0) | (values == 1))
    if pa.types.is_list(atype) or pa.types.is_large_list(atype):
        inner = _zero_or_one_rows(pc.list_flatten(array))
        parents = np.asarray(pc.list_parent_indices(array).to_numpy(zero_copy_only=False), np.int64)
        return np.unique(parents[inner])
    if pa.types.is_struct(atype):
        found = [_zero_or_one_rows(array.field(i)) for i in range(atype.num_fields) if _has_floats(atype.field(i).type)]
        return np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
    return np.zeros(0, np.int64)


def _bool_where_float(value: Any, atype: pa.DataType) -> bool:
    if pa.types.is_floating(atype):
        return value.__class__ is bool
    if (pa.types.is_list(atype) or pa.types.is_large_list(atype)) and isinstance(value, list):
        return any(_bool_where_float(item, atype.value_type) for item in value)
    if pa.types.is_struct(atype) and isinstance(value, dict):
        return any(_bool_where_float(value.get(atype.field(i).name), atype.field(i).type) for i in range(atype.num_fields)
                   if _has_floats(atype.field(i).type))
    return False


def _has_floats(atype: pa.DataType) -> bool:
    if pa.types.is_floating(atype):
        return True
    if pa.types.is_list(atype) or pa.types.is_large_list(atype):
        return _has_floats(atype.value_type)
    if pa.types.is_struct(atype):
        return any(_has_floats(atype.field(i).type) for i in range(atype.num_fields))
    return False


Presence = Callable[[str], np.ndarray]
"""Field name -> which records of the batch had the field (records turned into columns)."""


@dataclass(frozen=True)
class _Part:
    column: str | None
    """The batch column of the field; ``None`` when no row has it (all get ``default``)."""
    encoder: _Encoder | None
    default: bytes | None
    """Encoding of what an absent field gets; ``None`` when absence is an error."""
    presence_matters: bool = False
    """A null in the column may be an absent field, which is not the same as a null."""


class _FieldsPlan:
    """A record (or a lone key/value column) built from the batch's columns."""

    def __init__(self, parts: list[_Part]) -> None:
        self.parts = parts

    def encode(self, batch: pa.RecordBatch, presence: Presence | None = None) -> _Seg | None:
        segments = []
        count = batch.num_rows
        for part in self.parts:
            if part.column is None:
                constant = part.default or b""
                data = np.frombuffer(constant * count, np.uint8) if constant else _EMPTY
                segments.append(_fixed_width(data, len(constant), count))
                continue
            assert part.encoder is not None
            array = batch.column(part.column)
            if part.presence_matters and array.null_count:
                seg = self._absent_or_null(part, array, presence)
            else:
                seg = part.encoder(array, None)
            if seg is None:
                return None
            segments.append(seg)
        if not segments:  # a record of no fields: zero bytes per row
            return _Seg(np.zeros(count, np.int64), _EMPTY)
        return _concat(segments)

    @staticmethod
    def _absent_or_null(part: _Part, array: pa.Array, presence: Presence | None) -> _Seg | None:
        """Absent rows get the default, present ones (nulls included) their own encoding."""
        if presence is None or part.default is None or part.column is None:
            return None  # absence would be an error (or cannot be told): the exact path words it
        assert part.encoder is not None
        present = presence(part.column)
        seg = part.encoder(array, present)
        if seg is None:
            return None
        absent = ~present
        width = len(part.default)
        defaults = _Seg(np.where(absent, width, 0).astype(np.int64), np.frombuffer(part.default * int(absent.sum()), np.uint8))
        return _concat([seg, defaults])


def _fields_plan(
    fields: list[dict[str, Any]], types: dict[str, pa.DataType], named: dict[str, Any], *, key: bool, absent_as_null: bool
) -> _FieldsPlan | None:
    parts: list[_Part] = []
    for field in fields:
        name = field["name"]
        default = None if key else _default_bytes(field)
        if name in types:
            encoder = _encoder(field["type"], types[name], named, absent_as_null=absent_as_null)
            if encoder is None:
                return None
            if key:
                encoder = _no_nulls(encoder)  # a null key field is a missing key, whatever its type
            nullable = isinstance(field["type"], list) and "null" in field["type"]
            # Where an absent field (its default, or an error) and a null differ, a null that
            # may be either is told apart by which records had the field.
            presence_matters = absent_as_null and not key and not (nullable and field.get("default") is None)
            parts.append(_Part(name, encoder, default, presence_matters))
            continue
        if key or default is None:
            return None  # a missing key field or a required one: an error the exact path words
        parts.append(_Part(None, None, default))
    return _FieldsPlan(parts)


def _default_bytes(field: dict[str, Any]) -> bytes | None:
    """The encoding of the datum an absent field gets (its default; null when nullable), or
    ``None`` when it has none (an error) or its type cannot be encoded on its own."""
    nullable = isinstance(field["type"], list) and "null" in field["type"]
    if "default" not in field and not nullable:
        return None
    try:
        schema = fastavro.parse_schema(field["type"], _write_hint=False)
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema, field.get("default"))
    except Exception:  # noqa: BLE001 - a named type defined elsewhere, a default that does not fit, ...
        return None
    return out.getvalue()


class _Plan:
    def __init__(self, key: _FieldsPlan, value: _FieldsPlan) -> None:
        self.key = key
        self.value = value

    def encode(self, batch: pa.RecordBatch, presence: Presence | None = None) -> tuple[_Seg, _Seg] | None:
        key = self.key.encode(batch)
        if key is None:
            return None
        value = self.value.encode(batch, presence)
        if value is None:
            return None
        return key, value
