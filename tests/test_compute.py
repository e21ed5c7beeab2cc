"""venice.compute: specs checked, and results checked against a second computation
(plain Python over values fastavro decodes), for every field shape the walk reads,
values of older schemas, and hostile specs."""

from __future__ import annotations

import io
import math
import random
from typing import Any

import fastavro
import pytest

from venice.compute import MAX_OPS, MAX_VECTOR_LENGTH, Computer, ComputeSpec
from venice.errors import RequestError

V1: dict[str, Any] = {
    "type": "record",
    "name": "Item",
    "fields": [
        {"name": "name", "type": "string"},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B", "C"]}},
        {"name": "nested", "type": {"type": "record", "name": "Inner", "fields": [
            {"name": "xs", "type": {"type": "array", "items": "long"}},
            {"name": "m", "type": {"type": "map", "values": "string"}}]}},
        {"name": "embedding", "type": {"type": "array", "items": "float"}},
        {"name": "weights", "type": ["null", {"type": "array", "items": "double"}], "default": None},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": ["null", {"type": "map", "values": {"type": "array", "items": "int"}}], "default": None},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "blob", "type": "bytes"},
        {"name": "score", "type": "double"},
        {"name": "count", "type": "long"},
        {"name": "flag", "type": "boolean"},
    ],
}
V2: dict[str, Any] = {**V1, "fields": [*V1["fields"], {"name": "extra", "type": "int", "default": 7}]}
DIM = 8


def record(rng: random.Random, *, null_weights: bool = False) -> dict[str, Any]:
    return {
        "name": f"item-{rng.randrange(10**6)}-ünï",
        "kind": rng.choice(["A", "B", "C"]),
        "nested": {"xs": [rng.randrange(-5, 5) for _ in range(rng.randrange(4))], "m": {"k": "v"}},
        "embedding": [rng.uniform(-2, 2) for _ in range(DIM)],
        "weights": None if null_weights else [rng.uniform(-1, 1) for _ in range(DIM)],
        "tags": [f"t{i}" for i in range(rng.randrange(5))],
        "attrs": None if rng.random() < 0.3 else {f"a{i}": list(range(i)) for i in range(rng.randrange(4))},
        "note": rng.choice([None, "hello"]),
        "blob": bytes(rng.randrange(256) for _ in range(3)),
        "score": rng.uniform(-10, 10),
        "count": rng.randrange(-(2**40), 2**40),
        "flag": rng.random() < 0.5,
    }


def avro(schema: dict[str, Any], datum: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), datum)
    return out.getvalue()


def decoded(schema: dict[str, Any], data: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(data), fastavro.parse_schema(schema), None)


def spec(**body: Any) -> ComputeSpec:
    return ComputeSpec.from_json(body)


def expected(datum: dict[str, Any], s: ComputeSpec) -> dict[str, Any]:
    """The second computation: plain Python over fastavro's decode."""
    row: dict[str, Any] = {name: datum[name] for name in s.project}
    for op in s.ops:
        value = datum[op.field]
        if value is None:
            row[op.name] = None
        elif op.op == "count":
            row[op.name] = len(value)
        elif op.op == "dot_product":
            row[op.name] = math.fsum(a * b for a, b in zip(value, op.vector, strict=True))
        elif op.op == "hadamard_product":
            row[op.name] = [a * b for a, b in zip(value, op.vector, strict=True)]
        else:
            norms = math.sqrt(math.fsum(a * a for a in value)) * math.sqrt(math.fsum(b * b for b in op.vector))
            row[op.name] = 0.0 if norms == 0 else math.fsum(a * b for a, b in zip(value, op.vector, strict=True)) / norms
    return row


def close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    return bool(a == b) and type(a) is type(b)


ALL_OPS = spec(
    project=["name", "kind", "note", "score", "count", "flag", "blob"],
    compute=[
        {"op": "dot_product", "field": "embedding", "vector": [0.5] * DIM, "as": "dot"},
        {"op": "cosine_similarity", "field": "embedding", "vector": list(range(1, DIM + 1)), "as": "cos"},
        {"op": "hadamard_product", "field": "weights", "vector": [2.0] * DIM, "as": "had"},
        {"op": "dot_product", "field": "weights", "vector": [1] * DIM, "as": "wdot"},
        {"op": "count", "field": "tags", "as": "n_tags"},
        {"op": "count", "field": "attrs", "as": "n_attrs"},
    ],
)


class TestResults:
    def test_every_op_and_projection_matches_a_plain_computation(self) -> None:
        rng = random.Random(1)
        records = [record(rng, null_weights=i % 4 == 0) for i in range(60)]
        computer = Computer({1: V1}, ALL_OPS)
        stored = [(1, avro(V1, r)) for r in records]
        got = computer.run([*stored, None])
        assert got[-1] is None
        for data, row in zip(stored, got, strict=False):
            want = expected(decoded(V1, data[1]), ALL_OPS)
            assert close(row, want), (row, want)
            assert list(row) == [*ALL_OPS.project, *(op.name for op in ALL_OPS.ops)]

    def test_projections_the_walk_does_not_read_use_the_full_decode(self) -> None:
        rng = random.Random(2)
        s = spec(project=["nested", "tags", "attrs", "embedding"], compute=[{"op": "count", "field": "tags", "as": "n"}])
        computer = Computer({1: V1}, s)
        records = [record(rng) for _ in range(10)]
        for r, row in zip(records, computer.run([(1, avro(V1, r)) for r in records]), strict=True):
            assert close(row, expected(decoded(V1, avro(V1, r)), s))

    def test_values_of_an_older_schema_are_read_as_the_newest(self) -> None:
        rng = random.Random(3)
        s = spec(project=["name", "extra"], compute=[{"op": "dot_product", "field": "embedding", "vector": [1.0] * DIM, "as": "d"}])
        computer = Computer({1: V1, 2: V2}, s)
        old, new = record(rng), {**record(rng), "extra": 42}
        rows = computer.run([(1, avro(V1, old)), (2, avro(V2, new))])
        assert rows[0] is not None and rows[0]["extra"] == 7 and rows[0]["name"] == old["name"]
        assert rows[1] is not None and rows[1]["extra"] == 42
        assert close(rows[0]["d"], math.fsum(decoded(V1, avro(V1, old))["embedding"]))

    def test_zero_vectors_have_cosine_zero_and_empty_arrays_count_zero(self) -> None:
        rng = random.Random(4)
        r = {**record(rng), "embedding": [0.0] * DIM, "tags": []}
        s = spec(compute=[{"op": "cosine_similarity", "field": "embedding", "vector": [1.0] * DIM, "as": "c"},
                          {"op": "count", "field": "tags", "as": "n"}])
        assert Computer({1: V1}, s).run([(1, avro(V1, r))]) == [{"c": 0.0, "n": 0}]

    def test_arrays_in_several_blocks_and_sized_blocks(self) -> None:
        """Other Avro writers split arrays into blocks, some with byte sizes: read them all."""
        schema = {"type": "record", "name": "R", "fields": [
            {"name": "pre", "type": {"type": "array", "items": "string"}},
            {"name": "e", "type": {"type": "array", "items": "double"}},
            {"name": "m", "type": {"type": "map", "values": "long"}}]}

        def zz(n: int) -> bytes:
            n = (n << 1) ^ (n >> 63)
            out = bytearray()
            while n >= 0x80:
                out.append((n & 0x7F) | 0x80)
                n >>= 7
            out.append(n)
            return bytes(out)

        import struct

        pre = zz(-1) + zz(2) + zz(1) + b"x" + zz(0)  # a sized block of one string
        e = zz(2) + struct.pack("<dd", 1.5, 2.5) + zz(-1) + zz(8) + struct.pack("<d", 4.0) + zz(0)
        m = zz(1) + zz(1) + b"k" + zz(5) + zz(-1) + zz(3) + zz(1) + b"j" + zz(6) + zz(0)
        data = pre + e + m
        assert decoded(schema, data) == {"pre": ["x"], "e": [1.5, 2.5, 4.0], "m": {"k": 5, "j": 6}}
        s = spec(compute=[{"op": "dot_product", "field": "e", "vector": [1, 1, 1], "as": "d"},
                          {"op": "count", "field": "m", "as": "n"}, {"op": "count", "field": "pre", "as": "p"}])
        assert Computer({1: schema}, s).run([(1, data)]) == [{"d": 8.0, "n": 2, "p": 1}]


class TestSchemaChecks:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"project": ["nope"]}, "nope"),
            ({"compute": [{"op": "dot_product", "field": "nope", "vector": [1], "as": "x"}]}, "nope"),
            ({"compute": [{"op": "dot_product", "field": "name", "vector": [1], "as": "x"}]}, "name"),
            ({"compute": [{"op": "cosine_similarity", "field": "tags", "vector": [1], "as": "x"}]}, "tags"),
            ({"compute": [{"op": "hadamard_product", "field": "nested", "vector": [1], "as": "x"}]}, "nested"),
            ({"compute": [{"op": "dot_product", "field": "count", "vector": [1], "as": "x"}]}, "count"),
            ({"compute": [{"op": "count", "field": "score", "as": "x"}]}, "score"),
        ],
    )
    def test_a_field_that_is_missing_or_not_numeric_is_named(self, body: dict[str, Any], field: str) -> None:
        with pytest.raises(RequestError, match=repr(field)) as caught:
            Computer({1: V1}, ComputeSpec.from_json(body))
        assert caught.value.details["field"] == field
        assert caught.value.http_status == 400

    def test_a_vector_of_another_length_is_a_400_naming_the_field(self) -> None:
        rng = random.Random(5)
        s = spec(compute=[{"op": "dot_product", "field": "embedding", "vector": [1.0] * (DIM + 1), "as": "d"}])
        with pytest.raises(RequestError, match="'embedding'") as caught:
            Computer({1: V1}, s).run([(1, avro(V1, record(rng)))])
        assert caught.value.details["field"] == "embedding"

    def test_values_must_be_records(self) -> None:
        with pytest.raises(RequestError, match="record"):
            Computer({1: "string"}, spec(project=["x"]))


class TestHostileSpecs:
    @pytest.mark.parametrize(
        "body",
        [
            None, [], "x", {}, {"project": []}, {"project": "name"}, {"project": [1]}, {"project": [""]}, {"project": ["a" * 300]},
            {"project": ["name", "name"]}, {"keys": [1], "project": ["name"]}, {"project": ["name"], "extra": 1},
            {"compute": {}}, {"compute": [1]}, {"compute": [{}]},
            {"compute": [{"op": "sum", "field": "e", "as": "x"}]},
            {"compute": [{"op": "count", "field": "e", "as": "x", "vector": [1]}]},
            {"compute": [{"op": "dot_product", "field": "e", "as": "x"}]},
            {"compute": [{"op": "dot_product", "field": "e", "as": "x", "vector": []}]},
            {"compute": [{"op": "dot_product", "field": "e", "as": "x", "vector": "1,2"}]},
            {"compute": [{"op": "dot_product", "field": "e", "as": "x", "vector": [1, "2"]}]},
            {"compute": [{"op": "dot_product", "field": "e", "as": "x", "vector": [1, True]}]},
            {"compute": [{"op": "dot_product", "field": "e", "as": "x", "vector": [1, None]}]},
            {"compute": [{"op": "dot_product", "field": "e", "as": "x", "vector": [[1, 2]]}]},
            {"compute": [{"op": "dot_product", "field": "e", "as": "x", "vector": [float("nan")]}]},
            {"compute": [{"op": "dot_product", "field": "e", "as": "x", "vector": [float("inf")]}]},
            {"compute": [{"op": "dot_product", "field": "e", "as": "x", "vector": [10**400]}]},
            {"compute": [{"op": "dot_product", "field": "e", "as": "x", "vector": [1.0] * (MAX_VECTOR_LENGTH + 1)}]},
            {"compute": [{"op": "dot_product", "field": "e", "as": f"x{i}", "vector": [1.0] * 40_000} for i in range(7)]},
            {"compute": [{"op": "count", "field": "e", "as": f"x{i}"} for i in range(MAX_OPS + 1)]},
            {"compute": [{"op": "count", "field": "e", "as": "x"}, {"op": "count", "field": "f", "as": "x"}]},
            {"project": ["x"], "compute": [{"op": "count", "field": "e", "as": "x"}]},
            {"compute": [{"op": "count", "field": {"a": 1}, "as": "x"}]},
        ],
    )
    def test_refused_with_a_request_error(self, body: Any) -> None:
        with pytest.raises(RequestError):
            ComputeSpec.from_json(body)

    @pytest.mark.parametrize("raw", [b"", b"{", b"NaN", b"[" * 5000 + b"]" * 5000, b'{"compute": [' * 3000, b"\xff\xfe"])
    def test_undecodable_json_is_a_request_error(self, raw: bytes) -> None:
        with pytest.raises(RequestError):
            ComputeSpec.from_bytes(raw)

    def test_costly_requests_are_refused_before_running(self) -> None:
        dot = spec(compute=[{"op": "dot_product", "field": "e", "vector": [1.0] * 5000, "as": "d"}])
        dot.check_cost(10_000)  # 50,000,000 multiplications: the most allowed
        with pytest.raises(RequestError, match="multiplications"):
            dot.check_cost(10_001)
        product = spec(compute=[{"op": "hadamard_product", "field": "e", "vector": [1.0] * 1000, "as": "h"}])
        product.check_cost(5000)
        with pytest.raises(RequestError, match="return"):
            product.check_cost(5001)

    def test_round_trip_of_the_wire_form(self) -> None:
        assert ComputeSpec.from_bytes(ALL_OPS.to_bytes()) == ALL_OPS


def test_a_storage_server_imports_numpy_only_when_it_computes() -> None:
    """numpy (~16 MB resident) is loaded by the first computation, not by importing the server."""
    import subprocess
    import sys

    code = (
        "import sys, server.main\n"
        "print('numpy' in sys.modules)\n"
        "from venice.compute import Computer, ComputeSpec\n"
        "schema = {'type': 'record', 'name': 'R', 'fields': [{'name': 'v', 'type': {'type': 'array', 'items': 'float'}}]}\n"
        "spec = ComputeSpec.from_json({'compute': [{'op': 'dot_product', 'field': 'v', 'vector': [1.0, 2.0], 'as': 'd'}]})\n"
        "import fastavro, io\n"
        "out = io.BytesIO(); fastavro.schemaless_writer(out, fastavro.parse_schema(schema), {'v': [3.0, 4.0]})\n"
        "print(Computer({1: schema}, spec).run([(1, out.getvalue())]), 'numpy' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["False", "[{'d': 11.0}] True"]
