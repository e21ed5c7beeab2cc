"""Embedded backend: a durable log in a directory, shared by processes on one machine.

It exists so ``venice quickstart`` and most tests need no Java and no broker, while
behaving like Kafka where the platform depends on it: explicit partitions, per-partition
offsets, durable records, several writer and reader processes at once.

Layout::

    ROOT/<topic>/meta.json   {"partitions": P, "format": 2}; appears by an atomic rename
    ROOT/<topic>/p<N>.log    append-only frames of partition N; offset = frame index
    ROOT/<topic>/p<N>.end    u64 record count, u64 byte length: the last committed end
    ROOT/<topic>/p<N>.idx    sparse index, u64 offset + u64 byte position per entry

A frame is ``u32 length, u32 crc32, payload``; the payload is ``i64 timestamp (ms since
the epoch, the producer's clock), i32 key length, i32 value length (-1: tombstone), u16
header count, key, value, headers`` where each header is ``u16 name length, u32 value
length, name, value``. Format 1 (topics written before timestamps existed) has no
timestamp; such topics are still read (timestamp 0) and appended to in their format.

Writers (any process) append whole batches with one ``write`` on an ``O_APPEND`` file
descriptor while holding an exclusive ``flock`` on it, then record the new end in
``.end`` (and index entries in ``.idx``). Under the lock a writer compares ``.end`` with
the file size: bytes beyond it come from a writer that died mid-batch; their complete
frames are kept and a torn final frame is truncated. Readers take no lock: a short frame
or a bad checksum at the end of the file means "not written yet" and is read again on
the next poll. Topics appear and disappear atomically by renaming their directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import struct
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import orjson

from venice.errors import ConflictError, OffsetOutOfRangeError, PubSubError, TopicNotFoundError
from venice.pubsub.base import Consumer, Headers, Producer, PubSub
from venice.structs import Message, TopicPartition

__all__ = ["EmbeddedPubSub"]

_FRAME = struct.Struct("<II")  # payload length, crc32 of the payload
_HEAD = struct.Struct("<iiH")  # key length, value length (-1: tombstone), header count
_TIMESTAMP = struct.Struct("<q")  # format 2: record timestamp, ms since the epoch
_HEADER = struct.Struct("<HI")  # header name length, header value length
_PAIR = struct.Struct("<QQ")  # (.end) record count, byte length; (.idx) offset, byte position
FRAME_SIZE = _FRAME.size
FORMAT = 2
"""Version of the file layout written for new topics, in meta.json."""
READABLE_FORMATS = frozenset({1, 2})
INDEX_EVERY = 4096
"""An index entry every this many records bounds a seek to scanning that many frames."""
FLUSH_BYTES = 1 << 20
"""A producer writes (without fsync) once it buffers this much."""
READ_CHUNK = 1 << 20
POLL_MIN_S, POLL_MAX_S = 0.005, 0.02
ALIVE_CHECK_S = 0.5
"""How often an idle reader checks that its topic was not deleted."""
_MAX_TOPIC_LEN = 249
_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


# --- record encoding ---------------------------------------------------------------

_header_cache: dict[tuple[tuple[str, bytes], ...], bytes] = {}


def _encode_headers(headers: Headers) -> bytes:
    """Encoded headers, cached: most records of a push carry the same few headers."""
    key: tuple[tuple[str, bytes], ...] | None
    try:
        key = tuple(headers)
        encoded = _header_cache.get(key)
    except TypeError:  # unhashable headers (lists): encode without the cache
        key, encoded = None, None
    if encoded is None:
        parts = []
        for name, raw in headers:
            name_bytes = name.encode()
            parts += [_HEADER.pack(len(name_bytes), len(raw)), name_bytes, raw]
        encoded = b"".join(parts)
        if key is not None:
            if len(_header_cache) > 1024:
                _header_cache.clear()
            _header_cache[key] = encoded
    return encoded


def encode_frame(
    key: bytes, value: bytes | None, headers: Headers = (), timestamp_ms: int | None = None, fmt: int = FORMAT
) -> bytes:
    """One complete frame for a record (``timestamp_ms``: now when ``None``; unused by format 1)."""
    if value is None:
        payload = _HEAD.pack(len(key), -1, len(headers)) + key
    else:
        payload = _HEAD.pack(len(key), len(value), len(headers)) + key + value
    if fmt >= 2:
        stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        payload = _TIMESTAMP.pack(stamp) + payload
    if headers:
        payload += _encode_headers(headers)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _decode_headers(data: bytes, pos: int, count: int) -> tuple[tuple[str, bytes], ...]:
    headers = []
    for _ in range(count):
        name_len, value_len = _HEADER.unpack_from(data, pos)
        pos += _HEADER.size
        name = data[pos : pos + name_len].decode()
        pos += name_len
        headers.append((name, data[pos : pos + value_len]))
        pos += value_len
    return tuple(headers)


def decode_frames(
    data: bytes, start: int, limit: int, topic: str, partition: int, offset: int, fmt: int = FORMAT
) -> tuple[list[Message], int]:
    """Up to ``limit`` records from the complete, valid frames of ``data`` at ``start``;
    also the position after the last one. Stops at a short or corrupt frame."""
    messages: list[Message] = []
    append = messages.append
    unpack_frame, unpack_head, crc32 = _FRAME.unpack_from, _HEAD.unpack_from, zlib.crc32
    unpack_stamp = _TIMESTAMP.unpack_from
    stamped = fmt >= 2
    view = memoryview(data)
    pos, end = start, len(data)
    timestamp_ms = 0
    while len(messages) < limit and pos + FRAME_SIZE <= end:
        length, crc = unpack_frame(data, pos)
        body = pos + FRAME_SIZE
        stop = body + length
        if stop > end or crc32(view[body:stop]) != crc:
            break
        if stamped:
            timestamp_ms = unpack_stamp(data, body)[0]
            body += _TIMESTAMP.size
        key_len, value_len, header_count = unpack_head(data, body)
        at = body + _HEAD.size
        key = data[at : at + key_len]
        at += key_len
        value = None
        if value_len >= 0:
            value = data[at : at + value_len]
            at += value_len
        headers = _decode_headers(data, at, header_count) if header_count else ()
        append(Message(topic, partition, offset, key, value, headers, timestamp_ms))
        offset += 1
        pos = stop
    return messages, pos


def scan_frames(data: bytes, start: int = 0, limit: int = -1) -> tuple[int, int]:
    """Count complete, valid frames in ``data`` from ``start`` (at most ``limit``, -1: all);
    returns ``(count, position after the last one)``."""
    count, pos, end = 0, start, len(data)
    view = memoryview(data)
    unpack_frame, crc32 = _FRAME.unpack_from, zlib.crc32
    while count != limit and pos + FRAME_SIZE <= end:
        length, crc = unpack_frame(data, pos)
        stop = pos + FRAME_SIZE + length
        if stop > end or crc32(view[pos + FRAME_SIZE : stop]) != crc:
            break
        count += 1
        pos = stop
    return count, pos


# --- partition files ---------------------------------------------------------------


class _Files:
    """Paths of one partition's files."""

    def __init__(self, topic_dir: Path, partition: int) -> None:
        self.log = topic_dir / f"p{partition}.log"
        self.end = topic_dir / f"p{partition}.end"
        self.idx = topic_dir / f"p{partition}.idx"


def _read_pair(fd: int) -> tuple[int, int]:
    raw = os.pread(fd, _PAIR.size, 0)
    return _PAIR.unpack(raw) if len(raw) == _PAIR.size else (0, 0)


def _read_index(path: Path) -> list[tuple[int, int]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    usable = len(raw) - len(raw) % _PAIR.size  # a half-written last entry is ignored
    return list(_PAIR.iter_unpack(raw[:usable]))


def _count_from(fd: int, offset: int, position: int, size: int, limit: int = -1) -> tuple[int, int]:
    """Scan frames from a known ``(offset, position)`` towards ``size``; the ``(offset,
    position)`` reached after at most ``limit`` frames (-1: all complete ones)."""
    while position < size and limit != 0:
        data = os.pread(fd, min(size - position, READ_CHUNK * 4), position)
        count, used = scan_frames(data, 0, limit)
        if count == 0:
            length = _FRAME.unpack_from(data, 0)[0] if len(data) >= FRAME_SIZE else 0
            if FRAME_SIZE + length <= len(data) or position + FRAME_SIZE + length > size:
                break  # corrupt or incomplete frame: the end of what is readable
            data = os.pread(fd, FRAME_SIZE + length, position)  # one frame larger than a chunk
            count, used = scan_frames(data, 0, 1)
            if count == 0:
                break
        offset, position = offset + count, position + used
        if limit > 0:
            limit -= count
    return offset, position


def _valid_start(fd: int, position: int, size: int) -> bool:
    """Whether a frame boundary claimed by ``.end`` or ``.idx`` is plausible: the file
    ends there or a complete, valid frame starts there."""
    if position >= size:
        return position == size
    header = os.pread(fd, FRAME_SIZE, position)
    if len(header) < FRAME_SIZE:
        return False
    length = _FRAME.unpack(header)[0]
    if position + FRAME_SIZE + length > size:
        return False
    return scan_frames(os.pread(fd, FRAME_SIZE + length, position), 0, 1)[0] == 1


def _best_start(files: _Files, fd: int, target: int, size: int) -> tuple[int, int]:
    """The known ``(offset, position)`` closest below ``target``: from ``.end`` or ``.idx``."""
    try:
        with open(files.end, "rb") as end_file:
            count, position = _read_pair(end_file.fileno())
    except FileNotFoundError:
        count, position = 0, 0
    if 0 < count <= target and _valid_start(fd, position, size):
        return count, position
    for offset, position in reversed(_read_index(files.idx)):
        if offset <= target and _valid_start(fd, position, size):
            return offset, position
    return 0, 0


# --- the backend -------------------------------------------------------------------


class EmbeddedPubSub(PubSub):
    """The log rooted at ``root``; any number of processes may open the same root."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = f"embedded://{self.root}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PubSubError(f"cannot use {self.root} as the embedded log: {exc}") from exc

    def topic_dir(self, topic: str) -> Path:
        """The directory of ``topic``; names follow Kafka's rules so both backends agree."""
        if not topic or len(topic) > _MAX_TOPIC_LEN or not set(topic) <= _TOPIC_CHARS or topic.startswith("."):
            raise PubSubError(f"invalid topic name {topic!r}")
        return self.root / topic

    def partitions_of(self, topic: str) -> int:
        return self._meta(topic)[0]

    def format_of(self, topic: str) -> int:
        """The file layout version of ``topic`` (1: records without timestamps)."""
        return self._meta(topic)[1]

    def _meta(self, topic: str) -> tuple[int, int]:
        try:
            meta = orjson.loads((self.topic_dir(topic) / "meta.json").read_bytes())
            partitions, file_format = int(meta["partitions"]), meta.get("format")
        except FileNotFoundError:
            raise TopicNotFoundError(f"topic {topic!r} does not exist") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PubSubError(f"cannot read metadata of topic {topic!r}: {exc}") from exc
        if file_format not in READABLE_FORMATS:
            # Never read, nor "repair" (truncate), files this code does not understand.
            raise PubSubError(f"topic {topic!r} is in log format {file_format!r}, not one of {sorted(READABLE_FORMATS)}")
        return partitions, int(file_format)

    def _files(self, topic: str, partition: int) -> _Files:
        if not 0 <= partition < self.partitions_of(topic):
            raise TopicNotFoundError(f"topic {topic!r} has no partition {partition}")
        return _Files(self.topic_dir(topic), partition)

    def partition_path(self, topic: str, partition: int) -> Path:
        """The log file of one partition (tests use it to simulate torn writes)."""
        return self._files(topic, partition).log

    async def create_topic(self, topic: str, partitions: int, *, max_message_bytes: int | None = None) -> None:
        final = self.topic_dir(topic)
        if partitions < 1:
            raise PubSubError(f"a topic needs at least one partition, not {partitions}")
        if final.exists():
            raise ConflictError(f"topic {topic!r} already exists")
        staging = self.root / f".new-{topic}-{uuid.uuid4().hex}"
        try:
            _build_topic_dir(staging, partitions)
            os.rename(staging, final)  # fails when final exists and is not empty
            _fsync_dir(self.root)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if final.exists():
                raise ConflictError(f"topic {topic!r} already exists") from None
            raise PubSubError(f"cannot create topic {topic!r}: {exc}") from exc

    async def delete_topic(self, topic: str) -> None:
        doomed = self.root / f".deleted-{topic}-{uuid.uuid4().hex}"
        try:
            os.rename(self.topic_dir(topic), doomed)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise PubSubError(f"cannot delete topic {topic!r}: {exc}") from exc
        shutil.rmtree(doomed, ignore_errors=True)
        for leftover in self.root.glob(".deleted-*"):  # from a deleter that died mid-way
            shutil.rmtree(leftover, ignore_errors=True)

    async def list_topics(self) -> set[str]:
        try:
            return {p.name for p in self.root.iterdir() if not p.name.startswith(".") and (p / "meta.json").exists()}
        except OSError as exc:
            raise PubSubError(f"cannot list topics in {self.root}: {exc}") from exc

    async def partition_count(self, topic: str) -> int:
        return self.partitions_of(topic)

    async def end_offsets(self, topic: str) -> dict[int, int]:
        return {partition: self._end_offset(topic, partition) for partition in range(self.partitions_of(topic))}

    def _end_offset(self, topic: str, partition: int) -> int:
        files = self._files(topic, partition)
        try:
            fd = os.open(files.log, os.O_RDONLY)
        except FileNotFoundError:
            raise TopicNotFoundError(f"topic {topic!r} does not exist") from None
        try:
            size = os.fstat(fd).st_size
            offset, position = _best_start(files, fd, 1 << 62, size)
            return _count_from(fd, offset, position, size)[0]
        except OSError as exc:
            raise PubSubError(f"cannot read {files.log}: {exc}") from exc
        finally:
            os.close(fd)

    async def beginning_offsets(self, topic: str) -> dict[int, int]:
        return dict.fromkeys(range(self.partitions_of(topic)), 0)  # the embedded log keeps everything

    async def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        # A scan of each partition: the embedded log is for one machine's worth of data,
        # and a hybrid version asks this once, when it is opened.
        fmt = self.format_of(topic)
        found: dict[int, int] = {}
        for partition in range(self.partitions_of(topic)):
            if fmt < 2:  # no timestamps: every record counts as old
                found[partition] = self._end_offset(topic, partition)
                continue
            consumer = EmbeddedConsumer(self)
            try:
                await consumer.assign({TopicPartition(topic, partition): 0})
                found[partition] = await consumer.first_at_or_after(timestamp_ms)
            finally:
                await consumer.close()
        return found

    async def producer(self) -> Producer:
        return EmbeddedProducer(self)

    async def consumer(self) -> Consumer:
        return EmbeddedConsumer(self)

    async def close(self) -> None:
        return None


def _build_topic_dir(staging: Path, partitions: int) -> None:
    staging.mkdir()
    for partition in range(partitions):
        files = _Files(staging, partition)
        for path in (files.log, files.idx):
            path.touch()
        files.end.write_bytes(_PAIR.pack(0, 0))
    meta = staging / "meta.json"
    meta.write_bytes(orjson.dumps({"partitions": partitions, "format": FORMAT}))
    with open(meta, "rb") as f:
        os.fsync(f.fileno())
    _fsync_dir(staging)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- producer ----------------------------------------------------------------------


class _PartitionWriter:
    """Buffered frames for one partition and the descriptors to append them."""

    def __init__(self, topic: str, files: _Files, fmt: int) -> None:
        self.topic = topic
        self.files = files
        self.format = fmt
        try:
            self.fd = os.open(files.log, os.O_RDWR | os.O_APPEND)  # read: to check the tail
        except FileNotFoundError:
            raise TopicNotFoundError(f"topic {topic!r} does not exist") from None
        try:
            self.end_fd = os.open(files.end, os.O_RDWR | os.O_CREAT, 0o644)
            self.idx_fd = os.open(files.idx, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError:
            os.close(self.fd)
            raise
        self.inode = os.fstat(self.fd).st_ino
        self.frames: list[bytes] = []
        self.unsynced = False

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def write(self) -> None:
        """Append the buffered frames as one write; never await while holding the lock."""
        if not self.frames:
            return
        frames, self.frames = self.frames, []
        data = b"".join(frames)
        with self._locked():
            self._check_not_deleted()
            count, position = self._committed_end()
            try:
                written = os.write(self.fd, data)
                while written < len(data):  # short writes happen on full disks and signals
                    written += os.write(self.fd, data[written:])
            except OSError:
                os.ftruncate(self.fd, position)  # leave no torn frame behind
                raise
            self._index(count, position, frames)
            os.pwrite(self.end_fd, _PAIR.pack(count + len(frames), position + len(data)), 0)
        self.unsynced = True

    def _check_not_deleted(self) -> None:
        try:
            alive = os.stat(self.files.log).st_ino == self.inode
        except FileNotFoundError:
            alive = False
        if not alive:
            raise TopicNotFoundError(f"topic {self.topic!r} was deleted")

    def _committed_end(self) -> tuple[int, int]:
        """``(record count, byte length)`` of the valid log; truncates a torn tail.

        ``.end`` is exact unless a writer died after its append (its complete frames are
        counted here) or mid-append (its torn frame is cut off). Caller holds the lock."""
        count, position = _read_pair(self.end_fd)
        size = os.fstat(self.fd).st_size
        if position > size or (position < size and not _valid_start(self.fd, position, size)):
            count, position = _best_start(self.files, self.fd, 1 << 62, size)
        if position < size:
            count, position = _count_from(self.fd, count, position, size)
            if position < size:
                os.ftruncate(self.fd, position)
        return count, position

    def _index(self, count: int, position: int, frames: list[bytes]) -> None:
        """Append ``.idx`` entries for records of this batch at multiples of INDEX_EVERY."""
        entries = []
        next_indexed = -(-count // INDEX_EVERY) * INDEX_EVERY
        done = 0
        while next_indexed < count + len(frames):
            upto = next_indexed - count
            position += sum(map(len, frames[done:upto]))
            entries.append(_PAIR.pack(next_indexed, position))
            done = upto
            next_indexed += INDEX_EVERY
        if entries:
            os.write(self.idx_fd, b"".join(entries))

    def close(self) -> None:
        for fd in (self.fd, self.end_fd, self.idx_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class EmbeddedProducer(Producer):
    """Buffers frames per partition; writes a batch at ~1 MiB and on :meth:`flush`."""

    def __init__(self, log: EmbeddedPubSub) -> None:
        self._log = log
        self._writers: dict[tuple[str, int], _PartitionWriter] = {}
        self._buffered = 0

    async def send(
        self,
        topic: str,
        partition: int,
        key: bytes,
        value: bytes | None,
        headers: Headers = (),
        timestamp_ms: int | None = None,
    ) -> None:
        writer = self._writers.get((topic, partition))
        if writer is None:
            writer = self._open(topic, partition)
        frame = encode_frame(key, value, headers, timestamp_ms, writer.format)
        writer.frames.append(frame)
        self._buffered += len(frame)
        if self._buffered >= FLUSH_BYTES:
            self._write_all()
            await asyncio.sleep(0)  # sends never suspend otherwise: let other tasks run

    def _open(self, topic: str, partition: int) -> _PartitionWriter:
        """Open a partition at its first record, so a missing topic fails the send itself."""
        try:
            writer = _PartitionWriter(topic, self._log._files(topic, partition), self._log.format_of(topic))
        except OSError as exc:
            raise PubSubError(f"cannot open partition {partition} of {topic!r}: {exc}") from exc
        self._writers[(topic, partition)] = writer
        return writer

    def _write_all(self) -> None:
        try:
            for target, writer in list(self._writers.items()):
                try:
                    writer.write()
                except TopicNotFoundError:
                    del self._writers[target]  # a topic created again under the name gets a new writer
                    writer.close()
                    raise
        except OSError as exc:
            raise PubSubError(f"embedded log write failed: {exc}") from exc
        finally:
            self._buffered = sum(len(frame) for writer in self._writers.values() for frame in writer.frames)

    async def flush(self) -> None:
        self._write_all()
        unsynced = [w for w in self._writers.values() if w.unsynced]
        if not unsynced:
            return
        try:
            # fsync can take milliseconds: keep the event loop (and its readers) running.
            await asyncio.to_thread(_fsync_all, [w.fd for w in unsynced])
        except OSError as exc:
            raise PubSubError(f"embedded log fsync failed: {exc}") from exc
        for writer in unsynced:
            writer.unsynced = False

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()


def _fsync_all(fds: list[int]) -> None:
    for fd in fds:
        os.fsync(fd)


# --- consumer ----------------------------------------------------------------------


class _Cursor:
    """Read position in one partition file, with a read-ahead buffer of whole frames."""

    def __init__(self, log: EmbeddedPubSub, tp: TopicPartition, offset: int) -> None:
        self.tp = tp
        self.files = log._files(tp.topic, tp.partition)
        self.format = log.format_of(tp.topic)
        try:
            self.fd = os.open(self.files.log, os.O_RDONLY)
        except FileNotFoundError:
            raise TopicNotFoundError(f"topic {tp.topic!r} does not exist") from None
        self.inode = os.fstat(self.fd).st_ino
        self.offset = 0
        self.position = 0
        self._buffer = b""
        self._buffer_at = 0  # file position of _buffer[0]
        self._checked_at = time.monotonic()
        try:
            self._seek(offset)
        except BaseException:
            os.close(self.fd)
            raise

    def _seek(self, target: int) -> None:
        if target < 0:
            raise PubSubError(f"negative offset {target} for {self.tp}")
        size = os.fstat(self.fd).st_size
        offset, position = _best_start(self.files, self.fd, target, size)
        offset, position = _count_from(self.fd, offset, position, size, target - offset)
        if offset != target:
            raise OffsetOutOfRangeError(f"offset {target} of {self.tp} is beyond its end {offset}", {self.tp: target})
        self.offset, self.position = offset, position

    def read(self, limit: int) -> list[Message]:
        """Records available now, at most ``limit``."""
        messages = self._decode(limit)
        if len(messages) < limit and self._refill():
            messages += self._decode(limit - len(messages))
        return messages

    def _decode(self, limit: int) -> list[Message]:
        start = self.position - self._buffer_at
        if start >= len(self._buffer):
            return []
        messages, end = decode_frames(
            self._buffer, start, limit, self.tp.topic, self.tp.partition, self.offset, self.format
        )
        self.offset += len(messages)
        self.position = self._buffer_at + end
        return messages

    def _refill(self) -> bool:
        """Read what follows ``position``; a partial frame is always read again from disk."""
        available = os.fstat(self.fd).st_size - self.position
        if available <= 0:
            return False
        data = os.pread(self.fd, min(available, READ_CHUNK), self.position)
        if len(data) >= FRAME_SIZE:
            needed = FRAME_SIZE + _FRAME.unpack_from(data, 0)[0]
            if len(data) < needed <= available:  # one frame larger than a chunk
                data = os.pread(self.fd, needed, self.position)
        self._buffer, self._buffer_at = data, self.position
        return True

    def check_alive(self) -> None:
        """Raise TopicNotFoundError once the topic was deleted (checked at most every 0.5 s)."""
        now = time.monotonic()
        if now - self._checked_at < ALIVE_CHECK_S:
            return
        self._checked_at = now
        try:
            alive = os.stat(self.files.log).st_ino == self.inode
        except FileNotFoundError:
            alive = False
        if not alive:
            raise TopicNotFoundError(f"topic {self.tp.topic!r} was deleted")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class EmbeddedConsumer(Consumer):
    """Polls the assigned partition files; takes no locks, so readers never slow writers."""

    def __init__(self, log: EmbeddedPubSub) -> None:
        self._log = log
        self._cursors: dict[TopicPartition, _Cursor] = {}
        self._turn = 0

    async def assign(self, positions: Mapping[TopicPartition, int]) -> None:
        for tp in list(self._cursors):
            if positions.get(tp) != self._cursors[tp].offset:
                self._cursors.pop(tp).close()
        for tp, offset in positions.items():
            if tp not in self._cursors:
                tp = TopicPartition(*tp)
                try:
                    self._cursors[tp] = _Cursor(self._log, tp, offset)
                except OSError as exc:
                    raise PubSubError(f"cannot open {tp}: {exc}") from exc

    async def getmany(self, timeout_ms: int = 500, max_records: int = 1000) -> dict[TopicPartition, list[Message]]:
        deadline = time.monotonic() + timeout_ms / 1000
        delay = POLL_MIN_S
        # Reading never suspends; yield once so a consumer working through a backlog
        # cannot starve the other tasks of its process (a server's HTTP handlers).
        await asyncio.sleep(0)
        while True:
            result = self._poll(max(1, max_records))
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return result
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, POLL_MAX_S)

    def _poll(self, max_records: int) -> dict[TopicPartition, list[Message]]:
        result: dict[TopicPartition, list[Message]] = {}
        cursors = list(self._cursors.values())
        if not cursors:
            return result
        # Start at a different partition each call so one busy partition cannot starve the rest.
        self._turn = (self._turn + 1) % len(cursors)
        budget = max_records
        try:
            for cursor in cursors[self._turn :] + cursors[: self._turn]:
                if budget <= 0:
                    break
                messages = cursor.read(budget)
                if messages:
                    result[cursor.tp] = messages
                    budget -= len(messages)
                else:
                    cursor.check_alive()
        except OSError as exc:
            raise PubSubError(f"embedded log read failed: {exc}") from exc
        return result

    async def first_at_or_after(self, timestamp_ms: int) -> int:
        """The offset of the first record of the (one) assigned partition stamped at or
        after ``timestamp_ms``; its end offset when there is none."""
        (cursor,) = self._cursors.values()
        while True:
            messages = cursor.read(4096)
            if not messages:
                return cursor.offset
            for message in messages:
                if message.timestamp_ms >= timestamp_ms:
                    return message.offset
            await asyncio.sleep(0)

    async def close(self) -> None:
        for cursor in self._cursors.values():
            cursor.close()
        self._cursors.clear()
