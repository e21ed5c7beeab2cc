"""Controller rules of issue 11 without HTTP: a server id bound to its URL, an admin's
removal of a server, private stores and read quotas; and the endpoint -> role table."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from controller.app import Controller, create_app
from controller.auth import ControllerAuth, rule_for
from controller.state import UNCHANGED, ClusterState
from venice.auth import Action, Role, TokensFile
from venice.errors import ConflictError, NotFoundError, RequestError

VALUE_SCHEMA = {"type": "record", "name": "V", "fields": [{"name": "x", "type": "long"}]}


def _state() -> ClusterState:
    state = ClusterState("embedded:///tmp/x", dead_after_s=5.0, forget_after_s=60.0)
    state.heartbeat("s0", "http://127.0.0.1:7000", [], now=100.0)
    state.heartbeat("s1", "http://127.0.0.1:7001", [], now=100.0)
    state.create_store("members", "long", VALUE_SCHEMA, partitions=4, replication_factor=1)
    state.open_version("members", now=100.0)
    return state


def _placement(state: ClusterState) -> dict[int, list[str]]:
    return {p: [r.server for r in rs] for p, rs in state.version("members", 1).replicas.items()}


class TestServerBinding:
    def test_a_heartbeat_with_another_url_is_refused_and_changes_nothing(self) -> None:
        state = _state()
        before, generation = _placement(state), state.generation
        with pytest.raises(ConflictError, match=r"registered at http://127\.0\.0\.1:7000"):
            state.heartbeat("s0", "http://127.0.0.1:9999", [], now=101.0)
        assert state.servers["s0"].url == "http://127.0.0.1:7000"
        assert state.servers["s0"].last_heartbeat == 100.0  # not even kept alive by it
        assert _placement(state) == before and state.generation == generation

    def test_an_admin_removal_moves_replicas_and_frees_the_id(self) -> None:
        state = _state()
        assert {s for ss in _placement(state).values() for s in ss} == {"s0", "s1"}
        state.remove_server("s1", now=101.0)
        assert sorted(state.servers) == ["s0"]
        assert {s for ss in _placement(state).values() for s in ss} == {"s0"}
        state.heartbeat("s1", "http://127.0.0.1:8001", [], now=102.0)  # at a new URL now
        assert state.servers["s1"].url == "http://127.0.0.1:8001"
        with pytest.raises(NotFoundError):
            state.remove_server("nobody", now=103.0)

    def test_a_forgotten_server_may_register_at_another_url(self) -> None:
        state = _state()
        state.heartbeat("s0", "http://127.0.0.1:7000", [], now=170.0)
        state.rebalance(170.0)  # s1 silent past forget_after_s
        state.heartbeat("s1", "http://127.0.0.1:8001", [], now=171.0)
        assert state.servers["s1"].url == "http://127.0.0.1:8001"


class TestStoreSettings:
    def test_private_and_read_quota_reach_the_description_and_routing(self) -> None:
        state = _state()
        state.update_store("members", private=True, read_quota=50)
        assert state.describe_store(state.store("members"))["private"] is True
        entry = state.routing_table(101.0)["stores"]["members"]
        assert entry["private"] is True and entry["read_quota"] == 50
        state.update_store("members", read_quota=UNCHANGED, private=None)
        assert state.store("members").read_quota == 50 and state.store("members").private
        state.update_store("members", read_quota=None, private=False)
        entry = state.routing_table(102.0)["stores"]["members"]
        assert "private" not in entry and "read_quota" not in entry

    @pytest.mark.parametrize("quota", [0, -1, 10_000_001, True, 1.5, "5"])
    def test_bad_quotas_are_refused(self, quota: Any) -> None:
        state = _state()
        with pytest.raises(RequestError):
            state.update_store("members", read_quota=quota)
        assert state.store("members").read_quota is None

    def test_settings_survive_a_restart(self) -> None:
        state = _state()
        state.update_store("members", private=True, read_quota=7)
        again = ClusterState.from_dict(state.to_dict(), 5.0, 200.0, 60.0)
        assert again.store("members").private and again.store("members").read_quota == 7


class TestRules:
    """Every route of the controller has an explicit rule; the table matches docs/security.md."""

    EXPECTED: ClassVar[dict[tuple[str, str], Action | None]] = {
        ("GET", "/health"): None,
        ("GET", "/cluster"): None,
        ("GET", "/"): None,
        ("GET", "/dashboard/dashboard.js"): None,
        ("GET", "/dashboard/dashboard.css"): None,
        ("GET", "/metrics"): Action.MONITOR,
        ("GET", "/overview"): Action.MONITOR,
        ("GET", "/stores"): None,
        ("GET", "/stores/members"): Action.READ,
        ("GET", "/stores/members/versions"): Action.READ,
        ("GET", "/stores/members/versions/3"): Action.READ,
        ("POST", "/stores"): Action.ADMIN,
        ("PATCH", "/stores/members"): Action.ADMIN,
        ("DELETE", "/stores/members"): Action.ADMIN,
        ("POST", "/stores/members/rollback"): Action.ADMIN,
        ("POST", "/stores/members/versions/3/swap"): Action.ADMIN,
        ("POST", "/stores/members/versions/3/kill"): Action.ADMIN,
        ("POST", "/stores/members/value-schemas"): Action.WRITE,
        ("POST", "/stores/members/versions"): Action.WRITE,
        ("POST", "/stores/members/versions/3/end"): Action.WRITE,
        ("POST", "/stores/members/versions/3/error"): Action.WRITE,
        ("POST", "/servers/s0/heartbeat"): Action.CLUSTER,
        ("DELETE", "/servers/s0"): Action.ADMIN,
        ("GET", "/routing"): Action.MEMBER,
        ("GET", "/auth/tokens"): Action.CLUSTER,
    }

    def test_the_table(self) -> None:
        for (method, path), action in self.EXPECTED.items():
            assert rule_for(method, path)[0] == action, (method, path)
        assert rule_for("POST", "/stores/members/versions/3/end")[1] == "members"

    def test_unlisted_paths_need_admin(self) -> None:
        for method, path in [("GET", "/admin/anything"), ("PUT", "/stores/x"), ("POST", "/health"), ("GET", "/stores/a/b/c/d")]:
            assert rule_for(method, path)[0] is Action.ADMIN

    def test_every_route_of_the_app_has_a_rule(self, tmp_path: Any) -> None:
        from controller.persistence import MetadataFile
        from venice.pubsub import connect

        app = create_app(Controller(MetadataFile(tmp_path), connect(f"embedded://{tmp_path / 'log'}")))
        routes = set()
        for route in app.routes:
            for method in getattr(route, "methods", ()) or ():
                if method != "HEAD":
                    path = route.path.replace("{name}", "members").replace("{number}", "3").replace("{server_id}", "s0")  # type: ignore[attr-defined]
                    routes.add((method, path))
        documented = {(m, p) for (m, p) in self.EXPECTED} | {("GET", "/docs"), ("GET", "/redoc"), ("GET", "/openapi.json"), ("GET", "/docs/oauth2-redirect")}
        assert routes - documented == set()


def test_controller_auth_reads_the_token_file_again_on_a_fake_clock(tmp_path: Any) -> None:
    now = [0.0]
    file = TokensFile(tmp_path / "t.json")
    first, _ = file.create(Role.ADMIN)
    auth = ControllerAuth(None, file.path, clock=lambda: now[0])
    second, _ = file.create(Role.ADMIN)
    assert auth.policy().principal(first).role is Role.ADMIN
    assert auth.generation == 1
    now[0] = 1.0
    assert auth.policy().principal(second).role is Role.ADMIN
    assert auth.generation == 2
    file.path.write_text("{broken")  # a bad edit: the last good table stays
    now[0] = 2.0
    assert auth.policy().principal(second).role is Role.ADMIN
