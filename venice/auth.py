"""Who may do what: the cluster secret, bearer tokens and their roles (docs/security.md).

Everything here is I/O-free except :class:`TokensFile` (the token file on the
controller's disk), so the controller, routers and storage servers decide alike and
the rules are tested without a network.

* The **cluster secret** is what the parts of one cluster share: storage servers and
  routers present it to the controller (heartbeats, routing, the token table) and routers
  present it to storage servers. It is compared in constant time
  (:func:`hmac.compare_digest` over SHA-256 digests, so neither its content nor its length
  shows in the timing).
* **Tokens** are 256-bit random strings given to people and programs, each with one role
  (``admin``, ``writer``, ``reader`` or ``monitor``) and, for writers and readers, optionally one
  store. Only their SHA-256 digests are kept (the token file, the table routers get), so a
  stolen file or table lets nobody in: a token is looked up by the digest of what the
  caller presented, which says nothing usable about any token.

Both travel as ``Authorization: Bearer <credential>``. :class:`AuthPolicy` turns a
credential into a :class:`Principal` and answers one question per request:
:meth:`AuthPolicy.check` raises :class:`~venice.errors.UnauthorizedError` (401: no or
unknown credential) or :class:`~venice.errors.ForbiddenError` (403: known, not allowed).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from venice.errors import ConfigError, ForbiddenError, UnauthorizedError

__all__ = [
    "ANONYMOUS",
    "CLUSTER_SECRET_ENV",
    "TOKEN_ENV",
    "Action",
    "AuthPolicy",
    "Principal",
    "Role",
    "TokenEntry",
    "TokenTable",
    "TokensFile",
    "bearer",
    "digest",
    "load_cluster_secret",
    "new_secret",
    "new_token",
]

TOKEN_ENV = "VENICE_TOKEN"
"""Where the CLI and the SDK find a token when none is given."""
CLUSTER_SECRET_ENV = "VENICE_CLUSTER_SECRET"
"""The cluster secret itself (``--cluster-secret-file`` names a file holding it instead)."""

TOKEN_PREFIX = "vt_"
"""Marks a string as a Venice token (secret scanners and people can tell it apart)."""
MAX_CREDENTIAL_CHARS = 512
"""Longer credentials are refused before any hashing: nothing we issue is near it."""
MIN_SECRET_CHARS = 16
_CREDENTIAL = re.compile(r"[A-Za-z0-9._~+/=-]+")
"""RFC 6750's token68 alphabet: all a bearer credential may hold."""
_DIGEST = re.compile(r"[0-9a-f]{64}")
_STORE = re.compile(r"[A-Za-z0-9._-]{1,200}")
TOKENS_FORMAT = 1


class Role(str, enum.Enum):
    ADMIN = "admin"
    """Stores, versions and servers: everything on the controller; reads and writes of every store."""
    WRITER = "writer"
    """Pushes (open, end or fail a version; register a value schema) and nearline writes
    of its store (every store when it names none); also reads them."""
    READER = "reader"
    """Reads of its store (every store when it names none) when the store is private."""
    MONITOR = "monitor"
    """The parts' metrics (``GET /metrics``) and the controller's overview (``GET
    /overview``), and nothing else: what a Prometheus scraper or a dashboard viewer needs.
    Always for every store (metrics name stores, they hold no data)."""
    CLUSTER = "cluster"
    """A part of the cluster (it holds the cluster secret): heartbeats, routing, the token
    table, reads of every store. Not an admin."""


class Action(str, enum.Enum):
    ADMIN = "admin"
    WRITE = "write"
    READ = "read"
    CLUSTER = "cluster"
    """What only parts of the cluster do (heartbeats, the token table)."""
    MEMBER = "member"
    """What any authenticated caller but a monitor may do (the controller's routing table)."""
    MONITOR = "monitor"
    """Reading metrics and the overview: monitor and admin tokens, and the cluster secret."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from, as far as its credential says."""

    role: Role | None
    """``None``: no credential (anonymous)."""
    store: str | None = None
    """The one store a writer or reader token is for; ``None``: every store."""
    token_id: str | None = None
    """The short id of the token (first 12 hex digits of its digest), for logs."""

    def may(self, action: Action, store: str | None = None) -> bool:
        role = self.role
        if role is None:
            return False
        if action is Action.CLUSTER:
            return role is Role.CLUSTER
        if action is Action.MONITOR:
            return role in (Role.MONITOR, Role.ADMIN, Role.CLUSTER)
        if role is Role.MONITOR:
            return False  # least privilege: not even the routing table (it names every server)
        if action is Action.MEMBER:
            return True
        if role is Role.ADMIN:
            return True
        if action is Action.ADMIN:
            return False
        if role is Role.CLUSTER:
            return action is Action.READ
        in_scope = self.store is None or self.store == store
        if action is Action.WRITE:
            return role is Role.WRITER and in_scope
        return role in (Role.WRITER, Role.READER) and in_scope

    def describe(self) -> str:
        if self.role is None:
            return "an anonymous caller"
        if self.role is Role.CLUSTER:
            return "the cluster secret"
        scope = f" of store {self.store!r}" if self.store else ""
        return f"{self.role.value} token {self.token_id}{scope}"


ANONYMOUS = Principal(None)


def digest(credential: str) -> str:
    """SHA-256 of a credential, hex: what is kept and compared instead of the credential."""
    return hashlib.sha256(credential.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A new token: 256 random bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_secret() -> str:
    """A new cluster secret: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def bearer(header: str | bytes | None) -> str | None:
    """The credential of an ``Authorization`` header (``None``: none given).

    A header that is there but not a well-formed ``Bearer`` credential is a 401 of its
    own, so a typo is told apart from no token at all."""
    if header is None:
        return None
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    scheme, _, credential = header.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise UnauthorizedError("the Authorization header must be 'Bearer <token>'")
    if len(credential) > MAX_CREDENTIAL_CHARS or not _CREDENTIAL.fullmatch(credential):
        raise UnauthorizedError("the bearer token is not a valid token")
    return credential


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One token as kept at rest: its digest, never the token."""

    sha256: str
    role: Role
    store: str | None = None
    created_at: float = 0.0
    note: str = ""

    @property
    def token_id(self) -> str:
        return self.sha256[:12]

    def to_json(self, *, public: bool = False) -> dict[str, Any]:
        entry: dict[str, Any] = {"sha256": self.sha256, "role": self.role.value, "store": self.store}
        if not public:
            entry["created_at"] = self.created_at
            entry["note"] = self.note
        return entry

    @classmethod
    def from_json(cls, raw: Any) -> TokenEntry:
        if not isinstance(raw, Mapping):
            raise ConfigError("a token entry is not a JSON object")
        sha = raw.get("sha256")
        if not isinstance(sha, str) or not _DIGEST.fullmatch(sha):
            raise ConfigError("a token entry's sha256 is not 64 lowercase hex digits")
        try:
            role = Role(raw.get("role"))
        except ValueError:
            raise ConfigError(f"token {sha[:12]}: role must be admin, writer, reader or monitor") from None
        if role is Role.CLUSTER:
            raise ConfigError(f"token {sha[:12]}: role must be admin, writer, reader or monitor")
        store = raw.get("store")
        if store is not None and (not isinstance(store, str) or not _STORE.fullmatch(store)):
            raise ConfigError(f"token {sha[:12]}: store must be a store name or null")
        if role in (Role.ADMIN, Role.MONITOR) and store is not None:
            raise ConfigError(f"token {sha[:12]}: an {role.value} token is for every store (no store)")
        created = raw.get("created_at", 0.0)
        note = raw.get("note", "")
        return cls(sha, role, store, float(created) if isinstance(created, (int, float)) else 0.0, str(note)[:200])


class TokenTable:
    """Tokens by digest. Immutable once built; a change is a new table."""

    def __init__(self, entries: Iterable[TokenEntry] = ()) -> None:
        self._by_digest: dict[str, TokenEntry] = {}
        for entry in entries:
            self._by_digest[entry.sha256] = entry

    def __len__(self) -> int:
        return len(self._by_digest)

    def entries(self) -> list[TokenEntry]:
        return sorted(self._by_digest.values(), key=lambda e: (e.created_at, e.sha256))

    def lookup(self, credential: str) -> TokenEntry | None:
        # A lookup by digest: what the timing could show is about a SHA-256 digest of the
        # caller's own guess, which tells nothing about any token's preimage.
        return self._by_digest.get(digest(credential))

    def to_json(self, *, public: bool = False) -> list[dict[str, Any]]:
        return [e.to_json(public=public) for e in self.entries()]

    @classmethod
    def from_json(cls, raw: Any) -> TokenTable:
        if not isinstance(raw, list):
            raise ConfigError("the token list is not a JSON array")
        return cls(TokenEntry.from_json(item) for item in raw)


class AuthPolicy:
    """The one decision every part makes per request: may this credential do that?

    ``secret``: the cluster secret (``None``: the cluster is open to anyone who can reach
    it, and a part says so loudly at start). ``tokens``: the token table (``None``: no
    tokens configured, admin and write actions are open)."""

    def __init__(self, secret: str | None = None, tokens: TokenTable | None = None) -> None:
        self._secret_digest = digest(secret).encode() if secret is not None else None
        self.tokens = tokens

    @property
    def has_secret(self) -> bool:
        return self._secret_digest is not None

    @property
    def open(self) -> bool:
        """Neither a secret nor tokens: anyone may do anything."""
        return self._secret_digest is None and self.tokens is None

    def principal(self, credential: str | None) -> Principal:
        """Who ``credential`` is; 401 for one that is neither the secret nor a known token."""
        if credential is None:
            return ANONYMOUS
        if self._secret_digest is not None and hmac.compare_digest(digest(credential).encode(), self._secret_digest):
            return Principal(Role.CLUSTER)
        if self.tokens is None:
            # No token file: nothing here can vouch for a token, and nothing needs one.
            return ANONYMOUS
        entry = self.tokens.lookup(credential)
        if entry is None:
            raise UnauthorizedError("the bearer token is not known here (revoked, mistyped, or of another cluster)")
        return Principal(entry.role, entry.store, entry.token_id)

    def required(self, action: Action, *, private: bool = False) -> bool:
        """Whether ``action`` needs a credential at all under this configuration."""
        if action in (Action.CLUSTER, Action.MEMBER):
            return self._secret_digest is not None
        if action is Action.MONITOR:
            return not self.open  # a part closed in any way does not show its metrics to anyone
        if action is Action.READ:
            return private and not self.open
        return self.tokens is not None

    def check(self, credential: str | None, action: Action, store: str | None = None, *, private: bool = False) -> Principal:
        """The caller's principal when it may do ``action`` (on ``store``); 401 or 403 otherwise."""
        principal = self.principal(credential)
        if not self.required(action, private=private) or principal.may(action, store):
            return principal
        if principal.role is None:
            raise UnauthorizedError(f"{_what(action, store)} needs a bearer token (Authorization: Bearer ...)")
        raise ForbiddenError(f"{principal.describe()} may not {_what(action, store, verb=True)}")


def _what(action: Action, store: str | None, *, verb: bool = False) -> str:
    phrases = {
        Action.ADMIN: ("this admin request", "make admin requests"),
        Action.WRITE: (f"writing to store {store!r}", f"write to store {store!r}"),
        Action.READ: (f"reading private store {store!r}", f"read store {store!r}"),
        Action.CLUSTER: ("this cluster-internal request", "make cluster-internal requests (they need the cluster secret)"),
        Action.MEMBER: ("this request", "make this request"),
        Action.MONITOR: ("reading metrics", "read metrics (that needs a monitor or admin token)"),
    }
    return phrases[action][1 if verb else 0]


def load_cluster_secret(path: Path | None, env: Mapping[str, str] | None = None) -> str | None:
    """The cluster secret from ``--cluster-secret-file`` or ``VENICE_CLUSTER_SECRET`` (the
    file wins); ``None`` when neither is given. A secret that is too short, or not of the
    bearer alphabet, is a :class:`~venice.errors.ConfigError`: a part never starts with a
    secret it cannot send."""
    env = os.environ if env is None else env
    if path is not None:
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the cluster secret file {path}: {exc}") from None
        where = str(path)
    else:
        secret = env.get(CLUSTER_SECRET_ENV, "").strip()
        where = CLUSTER_SECRET_ENV
        if not secret:
            return None
    if len(secret) < MIN_SECRET_CHARS or len(secret) > MAX_CREDENTIAL_CHARS or not _CREDENTIAL.fullmatch(secret):
        raise ConfigError(
            f"the cluster secret in {where} must be {MIN_SECRET_CHARS}-{MAX_CREDENTIAL_CHARS} characters of "
            "A-Z a-z 0-9 . _ ~ + / = - (make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return secret


class TokensFile:
    """The token file: ``{"format": 1, "tokens": [entry, ...]}``, digests only, mode 0600.

    Written whole and replaced by rename, so a reader sees the old file or the new one.
    The controller reads it again when it changes (:meth:`reload_if_changed`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None

    def _current_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {self.path}: {exc}") from None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def load(self) -> TokenTable:
        """The table in the file (empty when there is no file yet)."""
        stamp = self._current_stamp()
        if stamp is None:
            self._stamp = None
            return TokenTable()
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {self.path}: {exc}") from None
        if len(raw) > 64 << 20:
            raise ConfigError(f"the token file {self.path} is larger than 64 MiB")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"the token file {self.path} is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != TOKENS_FORMAT:
            raise ConfigError(f"the token file {self.path} is not a Venice token file (format {TOKENS_FORMAT})")
        try:
            table = TokenTable.from_json(data.get("tokens"))
        except ConfigError as exc:
            raise ConfigError(f"the token file {self.path}: {exc.message}") from None
        self._stamp = stamp
        return table

    def reload_if_changed(self) -> TokenTable | None:
        """A new table when the file changed since the last :meth:`load`; else ``None``."""
        if self._current_stamp() == self._stamp:
            return None
        return self.load()

    def save(self, table: TokenTable) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = orjson.dumps({"format": TOKENS_FORMAT, "tokens": table.to_json()}, option=orjson.OPT_INDENT_2)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def create(self, role: Role, store: str | None = None, note: str = "") -> tuple[str, TokenEntry]:
        """A new token added to the file: the token (shown once, kept nowhere) and its entry."""
        if role is Role.CLUSTER:
            raise ConfigError("the cluster role is the cluster secret's, not a token's")
        if role in (Role.ADMIN, Role.MONITOR) and store is not None:
            raise ConfigError(f"an {role.value} token is for every store: give no --store")
        if store is not None and not _STORE.fullmatch(store):
            raise ConfigError(f"invalid store name {store[:40]!r}")
        table = self.load()
        token = new_token()
        entry = TokenEntry(digest(token), role, store, time.time(), note[:200])
        self.save(TokenTable([*table.entries(), entry]))
        return token, entry

    def revoke(self, token_id: str) -> TokenEntry:
        """Remove the token whose id (or digest) starts with ``token_id``; exactly one must match."""
        table = self.load()
        if not token_id or not re.fullmatch(r"[0-9a-f]{6,64}", token_id):
            raise ConfigError("a token id is 6 to 64 lowercase hex digits (see venice token list)")
        matches = [e for e in table.entries() if e.sha256.startswith(token_id)]
        if len(matches) != 1:
            raise ConfigError(f"{len(matches)} tokens have an id starting with {token_id!r}: give exactly one")
        self.save(TokenTable(e for e in table.entries() if e is not matches[0]))
        return matches[0]
