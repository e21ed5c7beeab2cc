"""venice.auth: the token file (digests at rest), roles, the cluster secret, bearer parsing."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import orjson
import pytest

from venice.auth import (
    Action,
    AuthPolicy,
    Principal,
    Role,
    TokenEntry,
    TokensFile,
    TokenTable,
    bearer,
    load_cluster_secret,
)
from venice.errors import ConfigError, ForbiddenError, UnauthorizedError, error_body, error_from_response

SECRET = "s3cret-of-the-cluster-0123456789"


class TestTokensFile:
    def test_the_file_keeps_sha256_digests_never_the_token(self, tmp_path: Path) -> None:
        path = tmp_path / "tokens.json"
        token, entry = TokensFile(path).create(Role.WRITER, "members", note="push job")
        raw = path.read_bytes()
        assert token.encode() not in raw
        # The digest is SHA-256 of the token's UTF-8 bytes (hashlib, independent of venice.auth.digest).
        assert entry.sha256 == hashlib.sha256(token.encode()).hexdigest()
        data = orjson.loads(raw)
        assert data == {
            "format": 1,
            "tokens": [{"sha256": entry.sha256, "role": "writer", "store": "members", "created_at": entry.created_at, "note": "push job"}],
        }
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_tokens_are_256_random_bits_and_distinct(self, tmp_path: Path) -> None:
        tokens = {TokensFile(tmp_path / "t.json").create(Role.READER)[0] for _ in range(20)}
        assert len(tokens) == 20
        for token in tokens:
            assert token.startswith("vt_") and len(token) == 3 + 43  # 32 bytes of URL-safe base64

    def test_created_tokens_authenticate_with_their_role_and_store(self, tmp_path: Path) -> None:
        file = TokensFile(tmp_path / "t.json")
        admin, _ = file.create(Role.ADMIN)
        reader, _ = file.create(Role.READER, "a")
        policy = AuthPolicy(tokens=file.load())
        assert policy.principal(admin).role is Role.ADMIN
        assert policy.principal(reader) == Principal(Role.READER, "a", hashlib.sha256(reader.encode()).hexdigest()[:12])

    def test_revoke_by_id_removes_only_that_token(self, tmp_path: Path) -> None:
        file = TokensFile(tmp_path / "t.json")
        first, entry = file.create(Role.ADMIN)
        second, _ = file.create(Role.ADMIN)
        file.revoke(entry.token_id)
        policy = AuthPolicy(tokens=file.load())
        with pytest.raises(UnauthorizedError):
            policy.principal(first)
        assert policy.principal(second).role is Role.ADMIN
        with pytest.raises(ConfigError):
            file.revoke(entry.token_id)  # gone: no match
        with pytest.raises(ConfigError):
            file.revoke("")  # would match everything

    def test_reload_only_when_the_file_changed(self, tmp_path: Path) -> None:
        file = TokensFile(tmp_path / "t.json")
        file.create(Role.ADMIN)
        assert len(file.load()) == 1
        assert file.reload_if_changed() is None
        TokensFile(file.path).create(Role.READER, "x")  # another process (the CLI) adds one
        again = file.reload_if_changed()
        assert again is not None and len(again) == 2

    @pytest.mark.parametrize(
        "content",
        [
            b"not json",
            b"[]",
            b'{"format": 2, "tokens": []}',
            b'{"format": 1, "tokens": {}}',
            b'{"format": 1, "tokens": [{"sha256": "abc", "role": "admin"}]}',
            b'{"format": 1, "tokens": [{"sha256": "' + b"a" * 64 + b'", "role": "root"}]}',
            b'{"format": 1, "tokens": [{"sha256": "' + b"a" * 64 + b'", "role": "cluster"}]}',
            b'{"format": 1, "tokens": [{"sha256": "' + b"a" * 64 + b'", "role": "admin", "store": "x"}]}',
            b'{"format": 1, "tokens": [{"sha256": "' + b"a" * 64 + b'", "role": "reader", "store": "../x"}]}',
            b'{"format": 1, "tokens": [{"sha256": "' + b"A" * 64 + b'", "role": "reader"}]}',
            b"\xff\xfe garbage",
        ],
    )
    def test_a_bad_file_is_a_config_error(self, tmp_path: Path, content: bytes) -> None:
        path = tmp_path / "t.json"
        path.write_bytes(content)
        with pytest.raises(ConfigError):
            TokensFile(path).load()

    def test_no_file_is_an_empty_table(self, tmp_path: Path) -> None:
        assert len(TokensFile(tmp_path / "absent.json").load()) == 0

    def test_create_refuses_an_admin_with_a_store_and_the_cluster_role(self, tmp_path: Path) -> None:
        file = TokensFile(tmp_path / "t.json")
        with pytest.raises(ConfigError):
            file.create(Role.ADMIN, "x")
        with pytest.raises(ConfigError):
            file.create(Role.CLUSTER)
        with pytest.raises(ConfigError, match="monitor token is for every store"):
            file.create(Role.MONITOR, "x")
        with pytest.raises(ConfigError):
            file.create(Role.READER, "bad/name")
        assert not file.path.exists()


def _policy(tmp_path: Path) -> tuple[AuthPolicy, dict[str, str]]:
    file = TokensFile(tmp_path / "t.json")
    tokens = {
        "admin": file.create(Role.ADMIN)[0],
        "writer_a": file.create(Role.WRITER, "a")[0],
        "writer_all": file.create(Role.WRITER)[0],
        "reader_a": file.create(Role.READER, "a")[0],
        "reader_all": file.create(Role.READER)[0],
        "monitor": file.create(Role.MONITOR)[0],
        "secret": SECRET,
    }
    return AuthPolicy(SECRET, file.load()), tokens


# Who may do what, written out by hand (docs/security.md's table): (action, store) -> holders.
ALLOWED = {
    (Action.ADMIN, None): {"admin"},
    (Action.WRITE, "a"): {"admin", "writer_a", "writer_all"},
    (Action.WRITE, "b"): {"admin", "writer_all"},
    (Action.READ, "a"): {"admin", "writer_a", "writer_all", "reader_a", "reader_all", "secret"},
    (Action.READ, "b"): {"admin", "writer_all", "reader_all", "secret"},
    (Action.CLUSTER, None): {"secret"},
    (Action.MEMBER, None): {"admin", "writer_a", "writer_all", "reader_a", "reader_all", "secret"},
    (Action.MONITOR, None): {"admin", "monitor", "secret"},
}


class TestPolicy:
    @pytest.mark.parametrize(("action", "store"), sorted(ALLOWED, key=str))
    def test_roles(self, tmp_path: Path, action: Action, store: str | None) -> None:
        policy, tokens = _policy(tmp_path)
        for name, credential in tokens.items():
            if name in ALLOWED[(action, store)]:
                policy.check(credential, action, store, private=True)
            else:
                with pytest.raises(ForbiddenError) as info:
                    policy.check(credential, action, store, private=True)
                assert info.value.http_status == 403
            with pytest.raises(UnauthorizedError) as missing:
                policy.check(None, action, store, private=True)
            assert missing.value.http_status == 401

    def test_an_unknown_token_is_401_even_where_no_token_is_needed(self, tmp_path: Path) -> None:
        policy, _ = _policy(tmp_path)
        policy.check(None, Action.READ, "a", private=False)  # public store, anonymous: fine
        with pytest.raises(UnauthorizedError):
            policy.check("vt_" + "x" * 43, Action.READ, "a", private=False)

    def test_public_stores_are_readable_without_a_token(self, tmp_path: Path) -> None:
        policy, _ = _policy(tmp_path)
        assert policy.check(None, Action.READ, "a").role is None

    def test_open_cluster_allows_everything_anonymously(self) -> None:
        policy = AuthPolicy()
        assert policy.open
        for action in Action:
            policy.check(None, action, "a", private=True)

    def test_secret_only_guards_the_cluster_paths_and_private_reads(self) -> None:
        policy = AuthPolicy(SECRET)
        policy.check(None, Action.ADMIN)  # no token file: admin stays open
        with pytest.raises(UnauthorizedError):
            policy.check(None, Action.CLUSTER)
        with pytest.raises(UnauthorizedError):
            policy.check(None, Action.READ, "a", private=True)
        with pytest.raises(UnauthorizedError):
            policy.check(SECRET + "x", Action.CLUSTER)  # near miss
        with pytest.raises(UnauthorizedError):
            policy.check(SECRET[:-1], Action.CLUSTER)  # prefix
        assert policy.check(SECRET, Action.CLUSTER).role is Role.CLUSTER

    def test_metrics_are_closed_when_anything_is(self, tmp_path: Path) -> None:
        """Monitoring needs a credential once a secret or a token file is configured."""
        file = TokensFile(tmp_path / "t.json")
        monitor = file.create(Role.MONITOR)[0]
        assert AuthPolicy().check(None, Action.MONITOR).role is None  # open cluster: open metrics
        secret_only = AuthPolicy(SECRET)
        with pytest.raises(UnauthorizedError):
            secret_only.check(None, Action.MONITOR)
        with pytest.raises(UnauthorizedError):
            secret_only.check(monitor, Action.MONITOR)  # no token file: nothing vouches for a token
        assert secret_only.check(SECRET, Action.MONITOR).role is Role.CLUSTER
        tokens_only = AuthPolicy(tokens=file.load())
        with pytest.raises(UnauthorizedError):
            tokens_only.check(None, Action.MONITOR)
        assert tokens_only.check(monitor, Action.MONITOR).role is Role.MONITOR
        with pytest.raises(ForbiddenError, match="may not make admin requests"):
            tokens_only.check(monitor, Action.ADMIN)
        with pytest.raises(ForbiddenError):
            tokens_only.check(monitor, Action.WRITE, "a")
        # A public store stays readable by anyone; a private one is not a monitor's.
        assert tokens_only.check(monitor, Action.READ, "a").role is Role.MONITOR
        with pytest.raises(ForbiddenError):
            tokens_only.check(monitor, Action.READ, "a", private=True)

    def test_tokens_only_leave_cluster_paths_open(self, tmp_path: Path) -> None:
        file = TokensFile(tmp_path / "t.json")
        file.create(Role.ADMIN)
        policy = AuthPolicy(tokens=file.load())
        policy.check(None, Action.CLUSTER)
        with pytest.raises(UnauthorizedError):
            policy.check(None, Action.ADMIN)

    def test_errors_have_the_one_json_shape(self) -> None:
        for exc in (UnauthorizedError("x"), ForbiddenError("y")):
            again = error_from_response(exc.http_status, error_body(exc))
            assert type(again) is type(exc) and again.message == exc.message
        assert orjson.loads(error_body(ForbiddenError("no"))) == {"error": {"code": "FORBIDDEN", "message": "no"}}


class TestBearer:
    def test_parses_the_credential(self) -> None:
        assert bearer(None) is None
        assert bearer("Bearer abc") == "abc"
        assert bearer(b"bearer   abc.def-_~+/=  ") == "abc.def-_~+/="

    @pytest.mark.parametrize(
        "header",
        ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "abc", "Bearer a b", "Bearer \x00", "Bearer é", "Bearer " + "a" * 513, "Bearer a;b"],
    )
    def test_malformed_headers_are_401(self, header: str) -> None:
        with pytest.raises(UnauthorizedError):
            bearer(header)


class TestClusterSecret:
    def test_from_env_or_file_file_wins(self, tmp_path: Path) -> None:
        path = tmp_path / "secret"
        path.write_text(SECRET + "\n")
        assert load_cluster_secret(None, {}) is None
        assert load_cluster_secret(None, {"VENICE_CLUSTER_SECRET": "e" * 20}) == "e" * 20
        assert load_cluster_secret(path, {"VENICE_CLUSTER_SECRET": "e" * 20}) == SECRET

    @pytest.mark.parametrize("secret", ["short", "has space inside the secret", "a" * 600, "ünïcödé-secret-value"])
    def test_bad_secrets_refuse_to_start(self, tmp_path: Path, secret: str) -> None:
        path = tmp_path / "secret"
        path.write_text(secret)
        with pytest.raises(ConfigError):
            load_cluster_secret(path, {})

    def test_unreadable_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError):
            load_cluster_secret(tmp_path / "absent", {})
        (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
        with pytest.raises(ConfigError):
            load_cluster_secret(tmp_path / "bin", {})


def test_token_entry_round_trip() -> None:
    entry = TokenEntry("b" * 64, Role.READER, "s", 1.5, "n")
    assert TokenEntry.from_json(entry.to_json()) == entry
    assert entry.to_json(public=True) == {"sha256": "b" * 64, "role": "reader", "store": "s"}
    assert TokenTable.from_json([entry.to_json()]).entries() == [entry]
    assert os.sep not in entry.token_id
