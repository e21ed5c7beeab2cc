"""Embedded backend: a durable log in a directory, shared by processes on one machine.

Layout::

    ROOT/<topic>/meta.json      {"partitions": P}
    ROOT/<topic>/p<N>.log       append-only frames of partition N

A frame is ``u32 length, u32 crc32, payload``; the payload holds the key, the value
(length -1 for a tombstone) and the headers. A record's offset is its index in the file.

Writers (any process) append whole batches with one ``write`` on an ``O_APPEND`` file
descriptor while holding an exclusive ``flock``; before its first append to a file a
writer truncates a torn final frame left by a writer that died mid-write. Readers need
no lock: a frame that is short or fails its checksum at the end of the file is "not
written yet" and read again on the next poll. Topics appear and disappear atomically by
renaming their directory.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import struct
import time
import uuid
import zlib
from collections.abc import Mapping
from pathlib import Path

import orjson

from venice.errors import ConflictError, PubSubError, TopicNotFoundError
from venice.pubsub.base import Consumer, Headers, Producer, PubSub
from venice.structs import Message, TopicPartition

__all__ = ["EmbeddedPubSub"]

_FRAME = struct.Struct(">II")
_LEN = struct.Struct(">i")
_HCOUNT = struct.Struct(">H")
_HNAME = struct.Struct(">H")
_HVAL = struct.Struct(">I")
READ_CHUNK = 1 << 20
FLUSH_BYTES = 1 << 20
POLL_INTERVAL_S = 0.01


def encode_frame(key: bytes, value: bytes | None, headers: Headers) -> bytes:
    parts = [_LEN.pack(len(key)), key]
    if value is None:
        parts.append(_LEN.pack(-1))
    else:
        parts += [_LEN.pack(len(value)), value]
    parts.append(_HCOUNT.pack(len(headers)))
    for name, raw in headers:
        encoded = name.encode()
        parts += [_HNAME.pack(len(encoded)), encoded, _HVAL.pack(len(raw)), raw]
    payload = b"".join(parts)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> tuple[bytes, bytes | None, tuple[tuple[str, bytes], ...]]:
    (klen,) = _LEN.unpack_from(payload, 0)
    pos = 4
    key = payload[pos : pos + klen]
    pos += klen
    (vlen,) = _LEN.unpack_from(payload, pos)
    pos += 4
    value = None
    if vlen >= 0:
        value = payload[pos : pos + vlen]
        pos += vlen
    (count,) = _HCOUNT.unpack_from(payload, pos)
    pos += 2
    headers = []
    for _ in range(count):
        (nlen,) = _HNAME.unpack_from(payload, pos)
        pos += 2
        name = payload[pos : pos + nlen].decode()
        pos += nlen
        (hlen,) = _HVAL.unpack_from(payload, pos)
        pos += 4
        headers.append((name, payload[pos : pos + hlen]))
        pos += hlen
    return key, value, tuple(headers)


def scan_frames(data: bytes | memoryview, start: int = 0) -> tuple[list[tuple[int, int]], int]:
    """Complete, valid frames in ``data`` from ``start``: ``[(payload_start, payload_end)]``
    and the position after the last one."""
    frames = []
    pos, end = start, len(data)
    while pos + _FRAME.size <= end:
        length, crc = _FRAME.unpack_from(data, pos)
        stop = pos + _FRAME.size + length
        if stop > end or zlib.crc32(data[pos + _FRAME.size : stop]) != crc:
            break
        frames.append((pos + _FRAME.size, stop))
        pos = stop
    return frames, pos


class EmbeddedPubSub(PubSub):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = f"embedded://{self.root}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PubSubError(f"cannot use {self.root} as the embedded log: {exc}") from exc

    def topic_dir(self, topic: str) -> Path:
        if not topic or "/" in topic or topic.startswith("."):
            raise PubSubError(f"invalid topic name {topic!r}")
        return self.root / topic

    def partitions_of(self, topic: str) -> int:
        try:
            return int(orjson.loads((self.topic_dir(topic) / "meta.json").read_bytes())["partitions"])
        except FileNotFoundError:
            raise TopicNotFoundError(f"topic {topic!r} does not exist") from None

    def partition_path(self, topic: str, partition: int) -> Path:
        if not 0 <= partition < self.partitions_of(topic):
            raise PubSubError(f"topic {topic!r} has no partition {partition}")
        return self.topic_dir(topic) / f"p{partition}.log"

    async def create_topic(self, topic: str, partitions: int) -> None:
        final = self.topic_dir(topic)
        staging = self.root / f".new-{topic}-{uuid.uuid4().hex}"
        staging.mkdir()
        for partition in range(partitions):
            (staging / f"p{partition}.log").touch()
        (staging / "meta.json").write_bytes(orjson.dumps({"partitions": partitions}))
        try:
            os.rename(staging, final)  # fails when final exists and is not empty
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if final.exists():
                raise ConflictError(f"topic {topic!r} already exists") from None
            raise

    async def delete_topic(self, topic: str) -> None:
        doomed = self.root / f".deleted-{topic}-{uuid.uuid4().hex}"
        try:
            os.rename(self.topic_dir(topic), doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    async def list_topics(self) -> set[str]:
        return {p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")}

    async def partition_count(self, topic: str) -> int:
        return self.partitions_of(topic)

    async def end_offsets(self, topic: str) -> dict[int, int]:
        offsets = {}
        for partition in range(self.partitions_of(topic)):
            data = self.partition_path(topic, partition).read_bytes()
            offsets[partition] = len(scan_frames(data)[0])
        return offsets

    async def producer(self) -> Producer:
        return EmbeddedProducer(self)

    async def consumer(self) -> Consumer:
        return EmbeddedConsumer(self)

    async def close(self) -> None:
        return None


class EmbeddedProducer(Producer):
    def __init__(self, log: EmbeddedPubSub) -> None:
        self._log = log
        self._buffers: dict[tuple[str, int], list[bytes]] = {}
        self._buffered = 0
        self._fds: dict[tuple[str, int], int] = {}

    async def send(
        self, topic: str, partition: int, key: bytes, value: bytes | None, headers: Headers = ()
    ) -> None:
        frame = encode_frame(key, value, headers)
        self._buffers.setdefault((topic, partition), []).append(frame)
        self._buffered += len(frame)
        if self._buffered >= FLUSH_BYTES:
            self._write(durable=False)

    async def flush(self) -> None:
        self._write(durable=True)

    def _fd(self, target: tuple[str, int]) -> int:
        fd = self._fds.get(target)
        if fd is None:
            try:
                path = self._log.partition_path(*target)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            except FileNotFoundError:
                raise TopicNotFoundError(f"topic {target[0]!r} does not exist") from None
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                _repair_tail(path, fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._fds[target] = fd
        return fd

    def _write(self, durable: bool) -> None:
        buffers, self._buffers, self._buffered = self._buffers, {}, 0
        try:
            for target, frames in buffers.items():
                fd = self._fd(target)
                data = b"".join(frames)
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    written = os.write(fd, data)
                    while written < len(data):  # short writes happen on full disks, signals
                        written += os.write(fd, data[written:])
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            if durable:
                for fd in self._fds.values():
                    os.fsync(fd)
        except OSError as exc:
            raise PubSubError(f"embedded log write failed: {exc}") from exc

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def _repair_tail(path: Path, fd: int) -> None:
    """Truncate a torn final frame (a writer killed mid-write). Caller holds the lock."""
    data = path.read_bytes()
    _, valid_end = scan_frames(data)
    if valid_end < len(data):
        os.ftruncate(fd, valid_end)


class _Cursor:
    """Read position in one partition file."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        try:
            self.file = open(path, "rb")  # noqa: SIM115 - closed by the consumer
        except FileNotFoundError:
            raise TopicNotFoundError(f"no such partition file {path}") from None
        self.offset = 0
        self.position = 0
        self._skip_to(offset)

    def _skip_to(self, offset: int) -> None:
        while self.offset < offset:
            self.file.seek(self.position)
            data = self.file.read(READ_CHUNK * 8)
            frames, end = scan_frames(data)
            if not frames:
                break
            take = frames[: offset - self.offset]
            self.offset += len(take)
            self.position += take[-1][1]

    def read(self, max_records: int, topic: str, partition: int) -> list[Message]:
        self.file.seek(self.position)
        data = self.file.read(READ_CHUNK)
        frames, _ = scan_frames(data)
        if not frames and len(data) >= READ_CHUNK:
            data += self.file.read(_FRAME.unpack_from(data, 0)[0])  # one frame larger than a chunk
            frames, _ = scan_frames(data)
        messages = []
        for start, stop in frames[:max_records]:
            key, value, headers = decode_payload(data[start:stop])
            messages.append(Message(topic, partition, self.offset, key, value, headers))
            self.offset += 1
        if messages:
            self.position += frames[len(messages) - 1][1]
        return messages

    def close(self) -> None:
        self.file.close()


class EmbeddedConsumer(Consumer):
    def __init__(self, log: EmbeddedPubSub) -> None:
        self._log = log
        self._cursors: dict[TopicPartition, _Cursor] = {}
        self._turn = 0

    async def assign(self, positions: Mapping[TopicPartition, int]) -> None:
        for tp in list(self._cursors):
            if tp not in positions or self._cursors[tp].offset != positions[tp]:
                self._cursors.pop(tp).close()
        for tp, offset in positions.items():
            if tp not in self._cursors:
                self._cursors[tp] = _Cursor(self._log.partition_path(tp.topic, tp.partition), offset)

    async def getmany(self, timeout_ms: int = 500, max_records: int = 1000) -> dict[TopicPartition, list[Message]]:
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            result: dict[TopicPartition, list[Message]] = {}
            budget = max_records
            cursors = list(self._cursors.items())
            self._turn = (self._turn + 1) % max(1, len(cursors))
            # Start at a different partition each call so one busy partition cannot starve the rest.
            for tp, cursor in cursors[self._turn :] + cursors[: self._turn]:
                if budget <= 0:
                    break
                try:
                    messages = cursor.read(budget, tp.topic, tp.partition)
                except OSError as exc:
                    raise PubSubError(f"embedded log read failed: {exc}") from exc
                if messages:
                    result[tp] = messages
                    budget -= len(messages)
            if result or time.monotonic() >= deadline:
                return result
            await asyncio.sleep(POLL_INTERVAL_S)

    async def close(self) -> None:
        for cursor in self._cursors.values():
            cursor.close()
        self._cursors.clear()
