"""``POST /v1/compute/{store}/{version}``: read compute on the replica that holds the data.

Body: :func:`venice.protocol.encode_compute_request` (the spec as JSON, then the keys as
batch frames); answer: one batch answer frame per key, in order, holding the key's
result as a JSON object (schema-id slot :data:`venice.protocol.COMPUTE_FOUND`) or
missing. The spec is checked against the hosted version's newest value schema and run by
:class:`venice.compute.Computer`; a spec that does not fit the schema, or a vector whose
length differs from a value's, is a 400 naming the field.
"""

from __future__ import annotations

from collections import OrderedDict
from urllib.parse import unquote_to_bytes

import orjson

from venice.compute import Computer, ComputeSpec
from venice.errors import ReplicaNotReadyError, RequestError
from venice.ingestion import IngestionHost, decode_stored
from venice.protocol import COMPUTE_FOUND, decode_compute_request, encode_batch_response
from venice.schema import json_default

__all__ = ["MAX_COMPUTE_KEYS", "ComputeEndpoint"]

MAX_COMPUTE_KEYS = 10_000
CACHED_COMPUTERS = 256


class ComputeEndpoint:
    """Runs read-compute requests against an ingestion host's ready partitions."""

    def __init__(self, host: IngestionHost) -> None:
        self.host = host
        self._computers: OrderedDict[tuple[object, ...], Computer] = OrderedDict()

    def answer(self, raw_path: bytes, body: bytes) -> bytes:
        parts = [unquote_to_bytes(p).decode("utf-8", "replace") for p in raw_path[len(b"/v1/compute/") :].split(b"/")]
        if len(parts) != 2:
            raise RequestError("a compute path is /v1/compute/{store}/{version}")
        store, version_text = parts
        try:
            version = int(version_text)
        except ValueError:
            raise RequestError(f"malformed version {version_text[:40]!r}") from None
        spec_json, items = decode_compute_request(body)
        if len(items) > MAX_COMPUTE_KEYS:
            raise RequestError(f"a compute request may hold at most {MAX_COMPUTE_KEYS} keys, got {len(items)}")
        computer = self._computer(store, version, spec_json)
        computer.spec.check_cost(len(items))
        storage = None
        for partition in {p for p, _ in items}:
            storage = self.host.ready(store, version, partition)
        if storage is None:
            return b""
        stored = [None if raw is None else decode_stored(raw) for raw in storage.get_many(items)]
        results = computer.run(stored)
        return encode_batch_response(
            None if row is None else (COMPUTE_FOUND, orjson.dumps(row, default=json_default)) for row in results
        )

    def _computer(self, store: str, version: int, spec_json: bytes) -> Computer:
        hosted = next((h for h in self.host.hosted.values() if h.assignment.store == store and h.assignment.version == version), None)
        if hosted is None:
            raise ReplicaNotReadyError(f"{store} v{version} is not hosted here")
        schemas = hosted.ingestion.schemas.schemas.schemas()
        key = (store, version, hosted.assignment.incarnation, tuple(sorted(schemas)), spec_json)
        computer = self._computers.get(key)
        if computer is None:
            computer = Computer(schemas, ComputeSpec.from_bytes(spec_json))
            self._computers[key] = computer
            if len(self._computers) > CACHED_COMPUTERS:
                self._computers.popitem(last=False)
        else:
            self._computers.move_to_end(key)
        return computer
