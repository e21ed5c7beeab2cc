"""Value-schema evolution: the compatibility check, the resolving decoder, proposals.

The verdicts are checked against fastavro's resolving reader on sample data that uses
every union branch and enum symbol of the writer (``tests/avro_samples.py``), and
against literal expectations; decoded values against what fastavro reads.
"""

from __future__ import annotations

import io
import random
from typing import Any

import fastavro
import pytest
from fastavro.validation import validate

from tests.avro_samples import SchemaMaker, fastavro_reads, mutate, samples
from venice.errors import (
    InvalidInputError,
    InvalidValueError,
    SchemaError,
    UnavailableError,
    UnknownSchemaError,
    error_body,
    error_from_response,
)
from venice.evolution import ValueDecoder, check_compatible, propose_schema, read_problem, resolve_datum


def record(*fields: dict[str, Any], name: str = "V", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def field(name: str, avro_type: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": avro_type, **extra}


def enum(symbols: list[str], name: str = "Color", **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": name, "symbols": symbols, **extra}


def encode(schema: Any, datum: Any) -> bytes:
    stream = io.BytesIO()
    fastavro.schemaless_writer(stream, fastavro.parse_schema(schema), datum)
    return stream.getvalue()


def of(avro_type: Any, **extra: Any) -> dict[str, Any]:
    """A record with one field ``a`` of ``avro_type``: the unit most cases compare."""
    return record(field("a", avro_type, **extra))


ADDRESS = record(field("city", "string"), field("zip", "string"), name="Address")
ADDRESS_INT_ZIP = record(field("city", "string"), field("zip", "long"), name="Address")
NODE = record(field("value", "int"), field("next", ["null", "Node"], default=None), name="Node")
NODE_V2 = record(
    field("value", "long"), field("next", ["null", "Node"], default=None), field("label", "string", default=""), name="Node"
)

# (case, writer, reader, reader can read writer's data) - literal expectations.
CASES: list[tuple[str, Any, Any, bool]] = [
    ("int->long", of("int"), of("long"), True),
    ("int->float", of("int"), of("float"), True),
    ("int->double", of("int"), of("double"), True),
    ("long->float", of("long"), of("float"), True),
    ("long->double", of("long"), of("double"), True),
    ("float->double", of("float"), of("double"), True),
    ("string->bytes", of("string"), of("bytes"), True),
    ("bytes->string", of("bytes"), of("string"), True),
    ("long->int", of("long"), of("int"), False),
    ("double->float", of("double"), of("float"), False),
    ("float->long", of("float"), of("long"), False),
    ("string->int", of("string"), of("int"), False),
    ("boolean->int", of("boolean"), of("int"), False),
    ("int->string", of("int"), of("string"), False),
    ("added field with default", record(field("a", "int")), record(field("a", "int"), field("b", "string", default="x")), True),
    ("added field without default", record(field("a", "int")), record(field("a", "int"), field("b", "string")), False),
    ("removed field", record(field("a", "int"), field("b", "string")), record(field("a", "int")), True),
    ("renamed field, alias", record(field("a", "int")), record(field("z", "int", aliases=["a"])), True),
    ("renamed field, no alias", record(field("a", "int")), record(field("z", "int")), False),
    ("renamed record", record(field("a", "int")), record(field("a", "int"), name="W"), False),
    ("renamed record, alias", record(field("a", "int")), record(field("a", "int"), name="W", aliases=["V"]), True),
    ("namespace only differs", record(field("a", "int"), namespace="x"), record(field("a", "int"), namespace="y"), True),
    ("enum gains symbol", of(enum(["R", "G"])), of(enum(["R", "G", "B"])), True),
    ("enum loses symbol", of(enum(["R", "G", "B"])), of(enum(["R", "G"])), False),
    ("enum loses symbol, default", of(enum(["R", "G", "B"])), of(enum(["R", "G"], default="R")), True),
    ("enum renamed", of(enum(["R"])), of(enum(["R"], name="Hue")), False),
    ("fixed same", of({"type": "fixed", "name": "F", "size": 4}), of({"type": "fixed", "name": "F", "size": 4}), True),
    ("fixed resized", of({"type": "fixed", "name": "F", "size": 4}), of({"type": "fixed", "name": "F", "size": 8}), False),
    ("fixed renamed", of({"type": "fixed", "name": "F", "size": 4}), of({"type": "fixed", "name": "G", "size": 4}), False),
    ("array items promoted", of({"type": "array", "items": "int"}), of({"type": "array", "items": "long"}), True),
    ("array items narrowed", of({"type": "array", "items": "long"}), of({"type": "array", "items": "int"}), False),
    ("map values promoted", of({"type": "map", "values": "float"}), of({"type": "map", "values": "double"}), True),
    ("map values changed", of({"type": "map", "values": "string"}), of({"type": "map", "values": "long"}), False),
    ("array->map", of({"type": "array", "items": "int"}), of({"type": "map", "values": "int"}), False),
    ("union gains branch", of(["null", "string"]), of(["null", "string", "int"]), True),
    ("union loses branch", of(["null", "string", "int"]), of(["null", "string"]), False),
    ("plain into union", of("string"), of(["null", "string"]), True),
    ("plain into union, promoted", of("int"), of(["null", "double"]), True),
    ("union into plain", of(["null", "string"]), of("string"), False),
    ("union branch promoted", of(["int", "string"]), of(["string", "long"]), True),
    ("union reordered", of(["null", "string", "int"]), of(["int", "null", "string"]), True),
    ("nested field retyped", of(ADDRESS), of(ADDRESS_INT_ZIP), False),
    ("nested field added with default",
     of(ADDRESS), of(record(field("city", "string"), field("zip", "string"), field("n", "int", default=0), name="Address")), True),
    ("records in a union, one grows",
     of([record(field("x", "int"), name="A"), record(field("y", "int"), name="B")]),
     of([record(field("x", "int"), name="A"), record(field("y", "int"), field("z", "int", default=1), name="B")]), True),
    ("records in a union, one gains a required field",
     of([record(field("x", "int"), name="A"), record(field("y", "int"), name="B")]),
     of([record(field("x", "int"), name="A"), record(field("y", "int"), field("z", "int"), name="B")]), False),
    ("record and map in a union",
     of([{"type": "map", "values": "int"}, record(field("x", "int"), name="A")]),
     of([record(field("x", "long"), field("q", "string", default=""), name="A"), {"type": "map", "values": "long"}]), True),
    ("recursive, grows", of(NODE), of(NODE_V2), True),
    ("recursive, shrinks", of(NODE_V2), of(NODE), False),
]  # fmt: skip


@pytest.mark.parametrize(("writer", "reader", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_literal_cases_agree_with_fastavro(writer: Any, reader: Any, expected: bool) -> None:
    assert (read_problem(reader, writer) is None) is expected
    assert fastavro_reads(writer, reader)[0] is expected


def _random_pairs(count: int) -> list[tuple[str, Any, Any]]:
    pairs = []
    rng = random.Random(12)
    for seed in range(count):
        base = SchemaMaker(seed).record()
        change, changed = mutate(base, rng)
        pairs.append((f"{seed}-{change}", base, changed))
    return pairs


def _valid(schema: Any) -> bool:
    try:
        fastavro.parse_schema(schema)
    except Exception:
        return False
    names = [f["name"] for f in schema["fields"]]
    return len(names) == len(set(names))


RANDOM_PAIRS = _random_pairs(400)


@pytest.mark.parametrize(("base", "changed"), [p[1:] for p in RANDOM_PAIRS], ids=[p[0] for p in RANDOM_PAIRS])
def test_random_changes_agree_with_fastavro(base: Any, changed: Any) -> None:
    """Each random schema change, in both directions: our verdict is fastavro's, and
    where it resolves, the decoder reads exactly what fastavro reads."""
    if not (_valid(base) and _valid(changed)):
        pytest.skip("the mutation made a schema fastavro refuses")
    for writer, reader in ((base, changed), (changed, base)):
        ours = read_problem(reader, writer)
        theirs, read = fastavro_reads(writer, reader)
        assert (ours is None) is theirs, ours
        if theirs:
            decoder = ValueDecoder({1: writer, 2: reader})
            assert [decoder.decode(1, data) for data in samples(writer)] == read


def test_random_pairs_cover_both_verdicts() -> None:
    """The random cases are only worth something if many resolve and many do not."""
    verdicts = [read_problem(c, b) is None for _, b, c in RANDOM_PAIRS if _valid(b) and _valid(c)]
    assert len(verdicts) > 300
    assert sum(verdicts) > 100
    assert len(verdicts) - sum(verdicts) > 50


class TestCheckCompatible:
    def test_accepts_a_compatible_schema(self) -> None:
        v1 = record(field("a", "int"))
        v2 = record(field("a", "int"), field("b", ["null", "string"], default=None))
        v3 = record(field("a", "long"), field("b", ["null", "string"], default=None), field("c", "double", default=0))
        check_compatible([v1], v2)
        with pytest.raises(SchemaError):  # v1 reads v3's long a? no: long -> int is not a promotion
            check_compatible([v1, v2], v3)

    def test_new_cannot_read_old_names_field_and_direction(self) -> None:
        v1 = record(field("address", ADDRESS))
        v2 = record(field("address", ADDRESS), field("age", "int"))
        with pytest.raises(SchemaError) as caught:
            check_compatible([v1], v2)
        message = caught.value.message
        assert message.startswith("the new schema cannot read data written with value schema 1: field age:")
        assert "no default" in message
        assert caught.value.details == {"field": "age", "reader": "new", "writer": 1}

    def test_old_cannot_read_new_names_nested_path(self) -> None:
        v1 = record(field("address", ADDRESS))
        v2 = record(field("address", ADDRESS_INT_ZIP))
        with pytest.raises(SchemaError) as caught:
            check_compatible([v1], v2)
        # Both directions fail here (long cannot be read as string nor vice versa); the
        # new schema reading old data is checked first.
        assert "field address.zip" in caught.value.message
        assert caught.value.details["field"] == "address.zip"

    def test_one_direction_only(self) -> None:
        """int -> long resolves, long -> int does not: the old schema cannot read new data."""
        with pytest.raises(SchemaError) as caught:
            check_compatible([of("int")], of("long"))
        assert caught.value.message == (
            "value schema 1 cannot read data written with the new schema: field a: written as long, which cannot be read as int"
        )
        assert caught.value.details == {"field": "a", "reader": 1, "writer": "new"}

    def test_names_the_schema_that_conflicts(self) -> None:
        v1 = record(field("a", "int"))
        v2 = record(field("a", "int"), field("b", "string", default=""))
        v3 = record(field("a", "int"), field("b", "string"))  # v3 cannot read v1 (no b), can read v2
        with pytest.raises(SchemaError) as caught:
            check_compatible([v1, v2], v3)
        assert caught.value.details["writer"] == 1

    def test_array_and_map_paths(self) -> None:
        items = record(field("tags", {"type": "array", "items": "string"}))
        with pytest.raises(SchemaError, match=r"field tags\[\]: written as string"):
            check_compatible([items], record(field("tags", {"type": "array", "items": "long"})))
        values = record(field("m", {"type": "map", "values": ADDRESS}))
        with pytest.raises(SchemaError, match=r"field m\{\}\.zip"):
            check_compatible([values], record(field("m", {"type": "map", "values": ADDRESS_INT_ZIP})))

    def test_enum_symbols_both_ways(self) -> None:
        """A symbol added needs a default, or old readers cannot read new data."""
        with pytest.raises(SchemaError, match="lacks writer symbol"):
            check_compatible([of(enum(["R", "G"]))], of(enum(["R", "G", "B"])))
        check_compatible([of(enum(["R", "G"], default="R"))], of(enum(["R", "G", "B"], default="R")))

    def test_bad_default_of_a_needed_field(self) -> None:
        """fastavro checks a default's outer type only; a record default missing a
        required field would fail at read time."""
        v2 = record(field("a", "int"), field("addr", ADDRESS, default={"city": "x"}))
        with pytest.raises(SchemaError, match=r"field addr: the reader's default does not fit.*zip"):
            check_compatible([record(field("a", "int"))], v2)

    def test_logical_types_are_not_promoted(self) -> None:
        millis = {"type": "long", "logicalType": "timestamp-millis"}
        assert read_problem(of(millis), of(millis)) is None
        assert "logical type" in (read_problem(of("double"), of(millis)) or "")

    def test_invalid_new_schema(self) -> None:
        with pytest.raises(SchemaError):
            check_compatible([of("int")], '{"type": "record", "name": "V", "fields": [{"name": "a"}]}')
        with pytest.raises(SchemaError):
            check_compatible([of("int")], "not json")

    def test_primitive_schemas(self) -> None:
        check_compatible(["string"], "bytes")
        check_compatible(["int", "int"], "int")
        with pytest.raises(SchemaError):
            check_compatible(["int"], "long")


class TestValueDecoder:
    V1 = record(field("id", "long"), field("name", "string"), field("legacy", "int"))
    V2 = record(
        field("id", "long"),
        field("full_name", "bytes", aliases=["name"]),
        field("legacy", "long"),
        field("tags", {"type": "array", "items": "string"}, default=["a"]),
        field("blob", "bytes", default="\u00ff\u0001"),
        field("address", ADDRESS, default={"city": "Paris", "zip": "75001"}),
        field("color", enum(["R", "G"]), default="G"),
    )

    def test_newest_decodes_directly(self) -> None:
        decoder = ValueDecoder({1: self.V1, 2: self.V2})
        datum = {"id": 1, "full_name": b"x", "legacy": 5, "tags": [], "blob": b"", "address": {"city": "a", "zip": "b"},
                 "color": "R"}  # fmt: skip
        assert decoder.decode(2, encode(self.V2, datum)) == datum

    def test_old_values_come_out_in_the_newest_schema(self) -> None:
        decoder = ValueDecoder({1: self.V1, 2: self.V2})
        data = encode(self.V1, {"id": 7, "name": "Ann", "legacy": 3})
        assert decoder.decode(1, data) == {
            "id": 7,
            "full_name": b"Ann",
            "legacy": 3,
            "tags": ["a"],
            "blob": b"\xff\x01",  # the spec's reading of a bytes default ...
            "address": {"city": "Paris", "zip": "75001"},
            "color": "G",
        }
        # ... where fastavro hands over the JSON string as it stands in the schema.
        theirs = fastavro.schemaless_reader(io.BytesIO(data), fastavro.parse_schema(self.V1), fastavro.parse_schema(self.V2))
        assert theirs["blob"] == "\u00ff\u0001"
        assert {k: v for k, v in theirs.items() if k != "blob"} == {
            k: v for k, v in decoder.decode(1, data).items() if k != "blob"
        }

    def test_defaults_are_fresh_copies(self) -> None:
        decoder = ValueDecoder({1: self.V1, 2: self.V2})
        data = encode(self.V1, {"id": 7, "name": "Ann", "legacy": 3})
        first = decoder.decode(1, data)
        first["tags"].append("mutated")
        first["address"]["city"] = "mutated"
        assert decoder.decode(1, data)["tags"] == ["a"]
        assert decoder.decode(1, data)["address"]["city"] == "Paris"

    def test_decode_as_an_older_schema(self) -> None:
        v3 = record(*self.V2["fields"], field("extra", "int", default=0))
        decoder = ValueDecoder({1: self.V1, 2: self.V2, 3: v3})
        datum = {"id": 1, "full_name": b"x", "legacy": 5, "tags": [], "blob": b"", "address": {"city": "a", "zip": "b"},
                 "color": "R"}  # fmt: skip
        assert decoder.decode_as(3, encode(v3, {**datum, "extra": 4}), 2) == datum
        # Aliases work for the reader only: V1's "name" does not know V2's "full_name"
        # (and V2's long "legacy" does not fit V1's int), so V1 cannot read V2's data.
        with pytest.raises(InvalidValueError, match="field name: the reader's field has no default"):
            decoder.decode_as(2, encode(self.V2, datum), 1)

    def test_primitive_schemas(self) -> None:
        decoder = ValueDecoder({1: "string", 2: "bytes"})
        assert decoder.decode(1, encode("string", "hé")) == "hé".encode()
        assert decoder.decode(2, encode("bytes", b"\x00")) == b"\x00"
        assert ValueDecoder({1: "int", 2: "double"}).decode(1, encode("int", -3)) == -3.0

    def test_unknown_schema_id(self) -> None:
        decoder = ValueDecoder({1: self.V1})
        with pytest.raises(UnknownSchemaError) as caught:
            decoder.decode(2, b"")
        assert isinstance(caught.value, UnavailableError)
        assert caught.value.refresh_routing and caught.value.retriable
        assert caught.value.details == {"schema_id": 2}
        assert 2 not in decoder and 1 in decoder

    def test_unknown_schema_error_over_http(self) -> None:
        """The router answers it as JSON; the SDK gets the same class back, retriable."""
        with pytest.raises(UnknownSchemaError) as caught:
            ValueDecoder({1: self.V1}).decode(3, b"")
        again = error_from_response(caught.value.http_status, error_body(caught.value))
        assert type(again) is UnknownSchemaError and again.retriable and again.details == {"schema_id": 3}
        assert caught.value.http_status == 503 and caught.value.code == "UNKNOWN_SCHEMA"

    @pytest.mark.parametrize(
        "data",
        [b"", b"\x02", b"\x02\x04ab\x06\x00", b"\xff" * 12, b"\x02\x04ab\x06junk"],
        ids=["empty", "truncated", "trailing", "bad varint", "trailing junk"],
    )
    def test_bytes_that_do_not_decode(self, data: bytes) -> None:
        decoder = ValueDecoder({1: self.V1, 2: self.V2})
        for schema_id in (1, 2):
            with pytest.raises(InvalidValueError):
                decoder.decode(schema_id, data)

    def test_invalid_utf8_in_a_promoted_field(self) -> None:
        decoder = ValueDecoder({1: of("bytes"), 2: of("string")})
        with pytest.raises(InvalidValueError, match="cannot be read as schema 2"):
            decoder.decode(1, encode(of("bytes"), {"a": b"\xff"}))

    def test_incompatible_pair_fails_reads_of_that_id_only(self) -> None:
        decoder = ValueDecoder({1: of("string"), 2: of("long")})
        assert decoder.decode(2, encode(of("long"), {"a": 1})) == {"a": 1}
        with pytest.raises(InvalidValueError, match="field a"):
            decoder.decode(1, encode(of("string"), {"a": "x"}))

    def test_decoders_are_built_once(self) -> None:
        decoder = ValueDecoder({1: self.V1, 2: self.V2})
        assert decoder.decoder(1) is decoder.decoder(1)
        assert decoder.decoder(2) is decoder.decoder(2, 2)
        assert decoder.newest_id == 2 and decoder.schema_ids == [1, 2]

    def test_no_schemas(self) -> None:
        with pytest.raises(SchemaError):
            ValueDecoder({})

    def test_ambiguous_unions_keep_their_branch(self) -> None:
        """A union of two records with the same fields, an enum and a string: after
        decoding, only the branch tells them apart, so the decoder asks fastavro for it."""
        a, b = record(field("x", "int"), name="A"), record(field("x", "int"), name="B")
        v1 = of([a, b, enum(["R"]), "string"])
        v2 = of([record(field("x", "int"), name="A"), record(field("x", "long"), field("y", "int", default=9), name="B"),
                 enum(["R", "S"]), "string"])  # fmt: skip
        decoder = ValueDecoder({1: v1, 2: v2})
        assert decoder.decode(1, encode(v1, {"a": ("B", {"x": 1})})) == {"a": {"x": 1, "y": 9}}
        assert decoder.decode(1, encode(v1, {"a": ("A", {"x": 1})})) == {"a": {"x": 1}}
        assert decoder.decode(1, encode(v1, {"a": ("Color", "R")})) == {"a": "R"}
        assert decoder.decode(2, encode(v2, {"a": ("B", {"x": 1, "y": 2})})) == {"a": {"x": 1, "y": 2}}
        # Tagged: the reader's branch names come with the data, so writing it back keeps them.
        tagged = decoder.decode_as(1, encode(v1, {"a": ("B", {"x": 1})}), 2, tagged=True)
        assert tagged == {"a": ("B", {"x": 1, "y": 9})}
        assert encode(v2, tagged) == encode(v2, {"a": ("B", {"x": 1, "y": 9})})

    def test_resolve_datum(self) -> None:
        assert resolve_datum({"id": 1, "name": "n", "legacy": 2}, self.V1, self.V2)["full_name"] == b"n"
        with pytest.raises(InvalidValueError):
            resolve_datum({"id": "x"}, self.V1, self.V2)


class TestProposeSchema:
    V = record(field("id", "long"), field("name", "string"), field("address", ["null", ADDRESS], default=None))

    def test_new_fields_become_nullable_with_default_null(self) -> None:
        records = [
            {"member": 1, "id": 1, "name": "a", "visits": 3, "address": {"city": "x", "zip": "1", "floor": 2}},
            {"member": 2, "id": 2, "name": "b", "visits": 4.5, "tags": ["t"], "address": None},
        ]
        proposed = propose_schema(self.V, records, exclude={"member"})
        assert proposed is not None
        new_fields = proposed["fields"][3:]
        assert new_fields == [
            {"name": "visits", "type": ["null", "double"], "default": None},
            {"name": "tags", "type": ["null", {"type": "array", "items": "string"}], "default": None},
        ]
        address = proposed["fields"][2]["type"][1]
        assert address["fields"][2] == {"name": "floor", "type": ["null", "long"], "default": None}
        check_compatible([self.V], proposed)
        for rec in records:
            value = {k: v for k, v in rec.items() if k != "member"}
            assert validate(value, fastavro.parse_schema(proposed), raise_errors=False)
        assert self.V["fields"][2]["type"][1]["fields"] == ADDRESS["fields"]  # the input is not modified

    def test_nothing_new(self) -> None:
        assert propose_schema(self.V, [{"id": 1, "name": "a"}]) is None

    def test_positions_and_conflicts(self) -> None:
        with pytest.raises(InvalidInputError) as caught:
            propose_schema(self.V, [("line 3", {"x": 1}), ("line 9", {"x": "one"})])
        assert caught.value.details["field"] == "x"
        assert "line 3" in caught.value.message and "line 9" in caught.value.message

    def test_nested_conflict_names_the_path(self) -> None:
        with pytest.raises(InvalidInputError, match=r"field address\.floor"):
            propose_schema(self.V, [{"address": {"floor": 1}}, {"address": {"floor": "x"}}])

    def test_csv_cells(self) -> None:
        proposed = propose_schema(self.V, [{"id": "1", "n": "12"}, {"id": "2", "n": ""}], text_cells=True)
        assert proposed is not None
        assert proposed["fields"][-1] == {"name": "n", "type": ["null", "long"], "default": None}

    def test_inferred_record_names_do_not_clash(self) -> None:
        existing = record(field("id", "long"), field("x", ["null", record(field("q", "int"), name="V_extra")], default=None))
        proposed = propose_schema(existing, [{"id": 1, "extra": {"a": 1}}])
        assert proposed is not None
        added = proposed["fields"][-1]["type"][1]
        assert added["name"] == "V_extra_"
        fastavro.parse_schema(proposed)
        check_compatible([existing], proposed)

    def test_only_records(self) -> None:
        with pytest.raises(SchemaError):
            propose_schema("string", [{"a": 1}])

    def test_json_text_schema(self) -> None:
        import orjson

        proposed = propose_schema(orjson.dumps(self.V).decode(), [{"new": True}])
        assert proposed is not None and proposed["fields"][-1]["type"] == ["null", "boolean"]
