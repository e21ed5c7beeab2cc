"""The storage server's read paths, shared by the ingesting process and its read workers.

* ``GET  /v1/{store}/{version}/{partition}/{key_b64url}``: one key;
* ``POST /v1/batch/{store}/{version}``: many keys (binary frames, venice/protocol.py).

Both are answered synchronously by :class:`venice.httpserver.HttpServer` (``fast_path``).
``ready(store, version, partition)`` gives the storage of a READY partition (or raises
ReplicaNotReadyError); ``ready_set()`` an object replaced whenever readiness changes
(the ingesting host's ready set, or the manifest view's in a read worker).

Reads are counted for ``GET /metrics`` (server/metrics.py) by one attribute increment on
the :class:`VersionStorage` the read already holds (``hits``, ``misses``, ``batches``,
``batch_keys``); a read refused (bad path, replica not ready...) goes to ``refused``,
off the fast path, with its path decoded again only then.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote_to_bytes

from venice.errors import KeyNotFoundError, RequestError, VeniceError
from venice.httpserver import AnswerHeaders
from venice.ingestion import decode_stored
from venice.ingestion.storage import PartitionReader, VersionStorage
from venice.protocol import SCHEMA_ID_HEADER, decode_batch_request, decode_key_segment, encode_batch_response

__all__ = ["ReadPaths"]

Answer = tuple[int, AnswerHeaders, bytes]
Refused = Callable[[str, "int | None", str, str], None]
"""``refused(store, version or None, kind, error code)``: kind is ``single`` or ``batch``."""

_OCTETS = b"content-type: application/octet-stream\r\n"
_SCHEMA_ID = SCHEMA_ID_HEADER.encode()
_READER_CACHE = 4096
_HEADS: dict[bytes, bytes] = {}
"""Pre-encoded answer headers of a GET (venice.httpserver.AnswerHeaders) by the 4
schema-id bytes stored before each value."""


def _heads(schema_id_bytes: bytes) -> bytes:
    heads = _OCTETS + b"%s: %d\r\n" % (_SCHEMA_ID, int.from_bytes(schema_id_bytes, "big"))
    if len(_HEADS) < 1024:
        _HEADS[schema_id_bytes] = heads
    return heads


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _text(part: bytes) -> str:
    """A path segment as the decoding path reads it (percent-decoded, UTF-8 with replacement)."""
    return (unquote_to_bytes(part) if b"%" in part else part).decode("utf-8", "replace")


class ReadPaths:
    """The synchronous read answers of a storage server (see the module doc)."""

    def __init__(
        self,
        ready: Callable[[str, int, int], VersionStorage],
        ready_set: Callable[[], object],
        refused: Refused | None = None,
    ) -> None:
        self._ready = ready
        self._ready_set = ready_set
        self._refused = refused
        self._readers: dict[bytes, tuple[PartitionReader, VersionStorage, str, int]] = {}
        self._readers_of: object = None

    def fast_path(
        self, method: str, path: bytes, query: bytes, body: bytes
    ) -> Answer | None:
        """Reads (single and batch) answered synchronously by :class:`venice.httpserver.HttpServer`
        (no task, no ASGI messages); ``None`` for anything else."""
        if not path.startswith(b"/v1/"):
            return None
        rest = path[4:]
        try:
            if method == "GET" and rest.count(b"/") == 3:
                return self._get_bytes(rest)
            if method == "POST" and rest.count(b"/") == 2:
                kind, store, version = (_text(p) for p in rest.split(b"/"))
                if kind == "batch":
                    return 200, _OCTETS, self._batch_answer(store, version, body)
        except KeyNotFoundError:
            raise  # counted as a miss
        except VeniceError as exc:
            if self._refused is not None:
                self._count_refused(method, rest, exc.code)
            raise
        return None

    def _count_refused(self, method: str, rest: bytes, code: str) -> None:
        assert self._refused is not None
        parts = [_text(p) for p in rest.split(b"/")]
        if method == "GET":
            self._refused(parts[0], _int_or_none(parts[1]), "single", code)
        else:
            self._refused(parts[1], _int_or_none(parts[2]), "batch", code)

    def _get_bytes(self, rest: bytes) -> Answer:
        """The hottest path of the server on the path's bytes: ``{store}/{version}/{partition}``
        looked up in a cache of readers (filled by the decoding path, :meth:`_reader_for`,
        and emptied whenever the host's ready set changes), the key segment base64url
        decoded, one read in the reader's reused transaction, a pre-built head."""
        head, _, segment = rest.rpartition(b"/")
        ready = self._ready_set()
        if ready is not self._readers_of:
            self._readers.clear()
            self._readers_of = ready
        entry = self._readers.get(head)
        if entry is None:
            entry = self._reader_for(head)
        read, storage, store, version = entry
        # Plain base64url as it is; anything else as the decoding path reads it.
        key = decode_key_segment(segment if segment.isascii() and b"%" not in segment else _text(segment))
        raw = read(key)
        if raw is None:
            storage.misses += 1
            raise KeyNotFoundError(f"key not found in {store} v{version}")
        storage.hits += 1
        heads = _HEADS.get(raw[:4])
        if heads is None:
            heads = _heads(raw[:4])
        return 200, heads, raw[4:]

    def _reader_for(self, head: bytes) -> tuple[PartitionReader, VersionStorage, str, int]:
        """The reader for ``{store}/{version}/{partition}`` as the decoding path reads them
        (percent-decoding, UTF-8, ints); raises ``RequestError`` for a malformed path and
        what ``ready`` raises."""
        store, version, partition = (_text(p) for p in head.split(b"/"))
        try:
            version_n, partition_n = int(version), int(partition)
        except ValueError as exc:
            raise RequestError(f"malformed read path: {exc}") from exc
        storage = self._ready(store, version_n, partition_n)
        if len(self._readers) >= _READER_CACHE:
            self._readers.clear()  # spellings of paths (leading zeros...) are endless: stay bounded
        entry = (storage.reader(partition_n), storage, store, version_n)
        self._readers[head] = entry
        return entry

    def _batch_answer(self, store: str, version: str, body: bytes) -> bytes:
        try:
            version_n = int(version)
        except ValueError as exc:
            raise RequestError(f"malformed version {version!r}") from exc
        items = decode_batch_request(body)
        storage = None
        for partition in {p for p, _ in items}:
            storage = self._ready(store, version_n, partition)
        if storage is None:
            return b""
        storage.batches += 1
        storage.batch_keys += len(items)
        return encode_batch_response(None if raw is None else decode_stored(raw) for raw in storage.get_many(items))

