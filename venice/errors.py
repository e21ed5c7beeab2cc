"""The one exception tree of the platform.

Every error a caller of ``venice`` (SDK, CLI, services) can see derives from
:class:`VeniceError`. The branches say what the caller should do::

    VeniceError                      code                 HTTP
    ├── RequestError                 BAD_REQUEST          400   fix the request
    │   ├── InvalidKeyError          INVALID_KEY          400
    │   ├── InvalidValueError        INVALID_VALUE        400
    │   │   └── IncompleteUpdateError INCOMPLETE_UPDATE   400   (an update leaves a field without a value)
    │   ├── SchemaError              INVALID_SCHEMA       400
    │   ├── InvalidInputError        INVALID_INPUT        400   (a push input file)
    │   ├── NoCurrentVersionError    NO_CURRENT_VERSION   400   (push data first)
    │   ├── NotSubscribedError       NOT_SUBSCRIBED       400   (an embedded client does not hold that partition)
    │   ├── WriteComputeDisabledError WRITE_COMPUTE_DISABLED 400 (partial updates on a store without write compute)
    │   ├── RequestTimeoutError      REQUEST_TIMEOUT      408   (head or body too slow)
    │   ├── BodyTooLargeError        BODY_TOO_LARGE       413
    │   ├── AnswerTooLargeError      ANSWER_TOO_LARGE     413   (ask for fewer or smaller values)
    │   ├── UrlTooLongError          URL_TOO_LONG         414
    │   ├── HeadersTooLargeError     HEADERS_TOO_LARGE    431
    │   ├── ConfigError              INVALID_CONFIG       400   (a secret or token file, a TLS setting)
    │   ├── UnauthorizedError        UNAUTHORIZED         401   (no bearer token, or one not known here)
    │   ├── ForbiddenError           FORBIDDEN            403   (the token's role or store does not allow it)
    │   └── ConflictError            CONFLICT             409
    │       ├── StoreExistsError     STORE_EXISTS         409
    │       ├── PushInProgressError  PUSH_IN_PROGRESS     409   (kill it or wait)
    │       └── NotHybridError       NOT_HYBRID           409   (nearline writes to a batch-only store)
    ├── NotFoundError                NOT_FOUND            404   treat as absent
    │   ├── StoreNotFoundError       STORE_NOT_FOUND      404
    │   ├── VersionNotFoundError     VERSION_NOT_FOUND    404
    │   │   └── VersionRetiredError  VERSION_RETIRED      410   (was served, now deleted)
    │   ├── PositionExpiredError     POSITION_EXPIRED     410   (a change-capture position older than the log keeps)
    │   ├── KeyNotFoundError         KEY_NOT_FOUND        404
    │   └── TopicNotFoundError       TOPIC_NOT_FOUND      404
    ├── UnavailableError             UNAVAILABLE          503   retry (elsewhere)
    │   ├── ReplicaNotReadyError     REPLICA_NOT_READY    503
    │   ├── NoReplicaError           NO_REPLICA           503
    │   ├── NotEnoughServersError    NOT_ENOUGH_SERVERS   503
    │   ├── TooManyConnectionsError  TOO_MANY_CONNECTIONS 503   (a process's connection cap)
    │   ├── TransportError           TRANSPORT            503   (connect error, reset)
    │   ├── DeadlineExceededError    DEADLINE_EXCEEDED    504
    │   ├── UnknownSchemaError       UNKNOWN_SCHEMA       503   (a value schema id the caller does not know yet)
    │   ├── OverloadedError          OVERLOADED           503   (too many writes waiting: slow down)
    │   └── PubSubError              PUBSUB               503
    │       └── OffsetOutOfRangeError OFFSET_OUT_OF_RANGE 503   (the log no longer, or not yet, has an offset read from)
    ├── QuotaExceededError           QUOTA_EXCEEDED       429   slow down: retry after ``details.retry_after_s``
    ├── PushError                    PUSH_FAILED          500   a push did not complete
    └── InternalError                INTERNAL             500

Flags on each class drive decisions without string matching: ``retriable`` (the
same request may succeed on another replica or later) and ``refresh_routing``
(the caller's routing table may be stale).

Over HTTP every error has one JSON shape::

    {"error": {"code": "STORE_NOT_FOUND", "message": "store 'x' does not exist"}}

:func:`error_from_response` turns that shape back into the matching class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

if TYPE_CHECKING:
    from venice.structs import TopicPartition

__all__ = [
    "AnswerTooLargeError",
    "BodyTooLargeError",
    "ConfigError",
    "ConflictError",
    "DeadlineExceededError",
    "ForbiddenError",
    "HeadersTooLargeError",
    "IncompleteUpdateError",
    "InternalError",
    "InvalidInputError",
    "InvalidKeyError",
    "InvalidValueError",
    "KeyNotFoundError",
    "NoCurrentVersionError",
    "NoReplicaError",
    "NotEnoughServersError",
    "NotFoundError",
    "NotHybridError",
    "NotSubscribedError",
    "OffsetOutOfRangeError",
    "OverloadedError",
    "PositionExpiredError",
    "PubSubError",
    "PushError",
    "PushInProgressError",
    "QuotaExceededError",
    "ReplicaNotReadyError",
    "RequestError",
    "RequestTimeoutError",
    "SchemaError",
    "StoreExistsError",
    "StoreNotFoundError",
    "TooManyConnectionsError",
    "TopicNotFoundError",
    "TransportError",
    "UnauthorizedError",
    "UnavailableError",
    "UnknownSchemaError",
    "UrlTooLongError",
    "VeniceError",
    "VersionNotFoundError",
    "VersionRetiredError",
    "WriteComputeDisabledError",
    "error_body",
    "error_from_response",
]


class VeniceError(Exception):
    """Root of every error the platform raises."""

    code: ClassVar[str] = "ERROR"
    http_status: ClassVar[int] = 500
    retriable: ClassVar[bool] = False
    refresh_routing: ClassVar[bool] = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def headers(self) -> list[tuple[bytes, bytes]]:
        """HTTP headers that go with this error's answer, besides its JSON body."""
        return []

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class RequestError(VeniceError):
    """The request is wrong; sending it again will not help."""

    code = "BAD_REQUEST"
    http_status = 400


class InvalidKeyError(RequestError):
    code = "INVALID_KEY"


class InvalidValueError(RequestError):
    code = "INVALID_VALUE"


class IncompleteUpdateError(InvalidValueError):
    """A partial update of a key with no value leaves a field that has no default unset.

    Its own class because ingestion skips and counts such updates rather than failing."""

    code = "INCOMPLETE_UPDATE"


class SchemaError(RequestError):
    code = "INVALID_SCHEMA"


class InvalidInputError(RequestError):
    """A push input file holds a record that cannot be pushed."""

    code = "INVALID_INPUT"


class NoCurrentVersionError(RequestError):
    code = "NO_CURRENT_VERSION"


class NotSubscribedError(RequestError):
    """A key of a partition an embedded client was not told to hold (``partitions=``)."""

    code = "NOT_SUBSCRIBED"


class WriteComputeDisabledError(RequestError):
    """A partial update for a store that does not take them (``venice store update --write-compute``)."""

    code = "WRITE_COMPUTE_DISABLED"
class RequestTimeoutError(RequestError):
    """The request's head (or body) did not arrive in time; the connection is closed."""

    code = "REQUEST_TIMEOUT"
    http_status = 408


class BodyTooLargeError(RequestError):
    """The request body is over the server's limit (checked against Content-Length
    before any of it is read)."""

    code = "BODY_TOO_LARGE"
    http_status = 413


class AnswerTooLargeError(RequestError):
    """The answer would be over the server's limit: ask for fewer keys or smaller values."""

    code = "ANSWER_TOO_LARGE"
    http_status = 413


class UrlTooLongError(RequestError):
    code = "URL_TOO_LONG"
    http_status = 414


class HeadersTooLargeError(RequestError):
    """The request line and headers together are over the server's limit."""

    code = "HEADERS_TOO_LARGE"
    http_status = 431


class ConfigError(RequestError):
    """A part's own configuration is wrong (a secret or token file, TLS files): fix it and
    start again."""

    code = "INVALID_CONFIG"


class UnauthorizedError(RequestError):
    """No credential, or one this part does not know: send a valid ``Authorization:
    Bearer`` token (or the cluster secret, for the cluster's own parts)."""

    code = "UNAUTHORIZED"
    http_status = 401

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"www-authenticate", b'Bearer realm="venice"')]


class ForbiddenError(RequestError):
    """A known credential whose role (or store) does not allow the request."""

    code = "FORBIDDEN"
    http_status = 403


class ConflictError(RequestError):
    code = "CONFLICT"
    http_status = 409


class StoreExistsError(ConflictError):
    code = "STORE_EXISTS"


class PushInProgressError(ConflictError):
    """A batch push to the store is running (its version is STARTED): one at a time."""

    code = "PUSH_IN_PROGRESS"


class NotHybridError(ConflictError):
    """A nearline write (put, delete, update) to a store that takes batch pushes only:
    make it hybrid first (``venice store update --hybrid-rewind-seconds S --hybrid-offset-lag N``)."""

    code = "NOT_HYBRID"


class NotFoundError(VeniceError):
    """The thing asked for does not exist."""

    code = "NOT_FOUND"
    http_status = 404


class StoreNotFoundError(NotFoundError):
    code = "STORE_NOT_FOUND"


class VersionNotFoundError(NotFoundError):
    code = "VERSION_NOT_FOUND"


class VersionRetiredError(VersionNotFoundError):
    """The version existed but its data has been deleted (retention, kill, failure)."""

    code = "VERSION_RETIRED"
    http_status = 410


class PositionExpiredError(NotFoundError):
    """A change-capture position the change log no longer reaches: entries after it were
    trimmed (or never kept by the version now current). Start again from a newer position
    (``since=None`` is the tail); nothing is skipped silently."""

    code = "POSITION_EXPIRED"
    http_status = 410


class KeyNotFoundError(NotFoundError):
    code = "KEY_NOT_FOUND"


class TopicNotFoundError(NotFoundError):
    code = "TOPIC_NOT_FOUND"


class UnavailableError(VeniceError):
    """A part is down, busy or not ready: retry, on another replica if there is one."""

    code = "UNAVAILABLE"
    http_status = 503
    retriable = True


class ReplicaNotReadyError(UnavailableError):
    code = "REPLICA_NOT_READY"
    refresh_routing = True


class NoReplicaError(UnavailableError):
    code = "NO_REPLICA"
    refresh_routing = True


class NotEnoughServersError(UnavailableError):
    code = "NOT_ENOUGH_SERVERS"


class TooManyConnectionsError(UnavailableError):
    """The process holds as many connections as it may: retry later or elsewhere."""

    code = "TOO_MANY_CONNECTIONS"


class TransportError(UnavailableError):
    code = "TRANSPORT"


class DeadlineExceededError(UnavailableError):
    code = "DEADLINE_EXCEEDED"
    http_status = 504


class UnknownSchemaError(UnavailableError):
    """A value names a schema id its reader does not know: the reader's copy of the
    store's schemas is older than the writer's, so refresh it and retry."""

    code = "UNKNOWN_SCHEMA"
    refresh_routing = True


class OverloadedError(UnavailableError):
    """More writes are waiting to be made durable than the process buffers: retry later."""

    code = "OVERLOADED"


class PubSubError(UnavailableError):
    code = "PUBSUB"


class OffsetOutOfRangeError(PubSubError):
    """A consumer was positioned at an offset its partition does not hold: retention
    deleted it (below the partition's beginning) or the partition ends before it.

    Its own class because retrying the same read never helps: the reader has to decide
    where to go on (ingestion: :func:`venice.ingestion.records.rt_resume`).
    ``positions`` names the partitions and the offsets that were asked for, when the
    backend says (Kafka does)."""

    code = "OFFSET_OUT_OF_RANGE"

    def __init__(self, message: str, positions: Mapping[TopicPartition, int] | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.positions: dict[TopicPartition, int] = dict(positions or {})


class QuotaExceededError(VeniceError):
    """A store's read quota is spent at this router: wait ``details.retry_after_s`` (the
    HTTP answer's ``Retry-After``). Not retriable elsewhere: every router enforces it."""

    code = "QUOTA_EXCEEDED"
    http_status = 429

    def headers(self) -> list[tuple[bytes, bytes]]:
        wait = self.details.get("retry_after_s")
        return [(b"retry-after", b"%d" % wait)] if isinstance(wait, int) and not isinstance(wait, bool) else []


class PushError(VeniceError):
    code = "PUSH_FAILED"


class InternalError(VeniceError):
    code = "INTERNAL"


def _all_subclasses(cls: type[VeniceError]) -> list[type[VeniceError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found


_BY_CODE: dict[str, type[VeniceError]] = {c.code: c for c in _all_subclasses(VeniceError)}


def error_body(exc: VeniceError) -> bytes:
    """The JSON body for an HTTP error response."""
    return orjson.dumps(exc.to_dict())


def error_from_response(status: int, body: bytes) -> VeniceError:
    """Rebuild the typed error from an HTTP error response of any Venice service."""
    try:
        payload = orjson.loads(body)["error"]
        code, message = str(payload["code"]), str(payload["message"])
        details = payload.get("details") or {}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        text = body[:200].decode("utf-8", "replace")
        if status >= 500:
            return UnavailableError(f"HTTP {status}: {text}")
        return VeniceError(f"HTTP {status}: {text}")
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = UnavailableError if status >= 500 else RequestError if status < 500 else VeniceError
    return cls(message, **details)
