"""Avro bytes <-> datums for whole schemas, safe on hostile input.

fastavro's C reader, writer and validator recurse on the C stack: a datum of a recursive
schema (a list, a tree) nested a few thousand levels deep crashes the process with a
segfault, and a few KB of hostile bytes are enough to ask for that. The functions here
refuse such datums before fastavro sees them and read long values of recursive schemas
with fastavro's pure-Python reader (which raises RecursionError instead), and turn every
failure into :class:`venice.errors.InvalidValueError`. Non-recursive schemas cannot nest
deeper than the schema itself and take fastavro's fast path untouched.

Schemas must be parsed by fastavro *with* its "already parsed" mark (the default of
``fastavro.parse_schema``): without it fastavro parses the schema again on every call.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import fastavro
import fastavro._read_py as fastavro_read_py

from venice.avrotree import MAX_NESTING, nested_deeper_than
from venice.errors import InvalidValueError

__all__ = ["avro_reader", "avro_writer"]

_SHORT_ENOUGH_FOR_C = 256
"""Bytes. Each level of a recursive datum takes at least one byte (a union index or an
array count), so a value this short nests at most this deep: fastavro's C reader takes
that; longer values of recursive schemas go to its pure-Python reader, which raises
RecursionError where the C one would overflow the C stack."""


def avro_reader(what: str, parsed: Any, *, named_types: bool, recursive: bool) -> Callable[[bytes], Any]:
    """``bytes -> datum`` for a parsed schema: whole input consumed, every failure an
    :class:`InvalidValueError` naming ``what``. ``named_types``: named union branches
    as ``(fullname, datum)``."""
    fast = fastavro.schemaless_reader
    safe = fastavro_read_py.schemaless_reader
    new_stream = io.BytesIO  # a local name: a faster lookup on the hot path

    def failed(exc: Exception) -> InvalidValueError:
        if isinstance(exc, RecursionError):
            return InvalidValueError(f"{what} does not decode: it nests too deeply")
        return InvalidValueError(f"{what} does not decode: {exc!r}")

    def left_over(stream: io.BytesIO, data: bytes) -> InvalidValueError:
        return InvalidValueError(f"{what} does not decode: {len(data) - stream.tell()} bytes left over")

    # Specialised closures: this runs on every read, so no per-call branching it can avoid.
    if not recursive and not named_types:

        def decode(data: bytes) -> Any:
            stream = new_stream(data)
            try:
                datum = fast(stream, parsed, None)
            except Exception as exc:  # fastavro raises several unrelated types for bad bytes
                raise failed(exc) from exc
            if stream.tell() != len(data):
                raise left_over(stream, data)
            return datum

        return decode

    def decode_carefully(data: bytes) -> Any:
        stream = new_stream(data)
        read = safe if recursive and len(data) > _SHORT_ENOUGH_FOR_C else fast
        try:
            datum = read(stream, parsed, None, return_named_type=named_types)
        except RecursionError as exc:
            raise failed(exc) from None
        except Exception as exc:  # fastavro raises several unrelated types for bad bytes
            raise failed(exc) from exc
        if stream.tell() != len(data):
            raise left_over(stream, data)
        return datum

    return decode_carefully


def avro_writer(what: str, parsed: Any, *, recursive: bool) -> Callable[[Any], bytes]:
    """``datum -> bytes`` for a parsed schema (fastavro's tuple notation picks union
    branches); failures are :class:`InvalidValueError`. A datum of a recursive schema
    nested deeper than :data:`~venice.avrotree.MAX_NESTING` is refused before fastavro's
    C code sees it."""
    write = fastavro.schemaless_writer

    def encode(datum: Any) -> bytes:
        if recursive and nested_deeper_than(datum):
            raise InvalidValueError(f"{what} nests deeper than {MAX_NESTING} levels")
        stream = io.BytesIO()
        try:
            write(stream, parsed, datum)
        except Exception as exc:  # fastavro raises several unrelated types for data that does not fit
            raise InvalidValueError(f"{what} does not encode: {exc!r}") from exc
        return stream.getvalue()

    return encode
