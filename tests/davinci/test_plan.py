"""What an embedded client hosts and serves, from the controller's store description:
the rules a storage server gets from its heartbeat, decided without I/O."""

from __future__ import annotations

from typing import Any

import pytest

from venice.davinci.plan import Target, check_partitions, plan_hosting
from venice.davinci.state import LocalState
from venice.errors import RequestError
from venice.protocol import StoreDescription

SCHEMA = {"type": "record", "name": "V", "fields": [{"name": "x", "type": "long"}]}


def description(current: int | None, versions: list[tuple[int, str]], *, hybrid: bool = False, incarnation: str = "inc1",
                extra: dict[int, dict[str, Any]] | None = None) -> StoreDescription:
    body: dict[str, Any] = {
        "name": "s", "incarnation": incarnation, "key_schema": "long", "value_schemas": {"1": SCHEMA},
        "partitions": 3, "current_version": current,
        "versions": [{"version": n, "topic": f"s_v{n}", "partitions": 3, "status": status, **(extra or {}).get(n, {})}
                     for n, status in versions],
    }
    if hybrid:
        body["hybrid"] = {"rewind_seconds": 60, "offset_lag": 10, "real_time_topic": "s_rt"}
    return StoreDescription.from_json(body)


def hosted(plan: Any) -> list[tuple[int, str, tuple[int, ...], bool]]:
    return [(a.version, a.incarnation, a.partitions, a.consume_rt) for a in plan.assignments]


class TestWhatIsHosted:
    def test_current_pushes_and_deferred_swaps_but_no_backups(self) -> None:
        d = description(3, [(1, "RETIRED"), (2, "ONLINE"), (3, "ONLINE"), (4, "ONLINE"), (5, "STARTED"), (6, "KILLED")])
        plan = plan_hosting(d, None)
        assert [a.version for a in plan.assignments] == [5, 4, 3]
        assert plan.target == Target(3, "inc1")
        assert all(a.partitions == (0, 1, 2) and a.topic == f"s_v{a.version}" for a in plan.assignments)

    def test_subscribed_partitions_only(self) -> None:
        plan = plan_hosting(description(1, [(1, "ONLINE")]), [2, 0, 2])
        assert hosted(plan) == [(1, "inc1", (0, 2), False)]

    @pytest.mark.parametrize("partitions", [[3], [-1], [], ["0"], [True], [1.0]])
    def test_bad_partitions_are_refused_naming_them(self, partitions: list[Any]) -> None:
        with pytest.raises(RequestError, match="partition"):
            check_partitions(partitions, 3)

    def test_nothing_pushed_yet(self) -> None:
        plan = plan_hosting(description(None, [(1, "STARTED")]), None)
        assert plan.target is None
        assert [a.version for a in plan.assignments] == [1]

    def test_served_version_is_kept_until_the_new_one_is_complete(self) -> None:
        before = plan_hosting(description(1, [(1, "ONLINE")]), None)
        serving = before.assignments[0]
        after = plan_hosting(description(2, [(1, "ONLINE"), (2, "ONLINE")]), None, serving)
        assert [a.version for a in after.assignments] == [2, 1]
        assert after.target == Target(2, "inc1")

    def test_rollback_hosts_the_backup_again_and_keeps_the_newer_version(self) -> None:
        serving = plan_hosting(description(2, [(1, "ONLINE"), (2, "ONLINE")]), None).assignments[0]
        assert serving.version == 2
        rolled = plan_hosting(description(1, [(1, "ONLINE"), (2, "ONLINE")]), None, serving)
        assert [a.version for a in rolled.assignments] == [2, 1]
        assert rolled.target == Target(1, "inc1")

    def test_a_store_created_again_keeps_the_old_incarnation_until_the_swap(self) -> None:
        serving = plan_hosting(description(4, [(4, "ONLINE")], incarnation="old"), None).assignments[0]
        plan = plan_hosting(description(5, [(5, "ONLINE")], incarnation="new"), None, serving)
        assert [(a.version, a.incarnation) for a in plan.assignments] == [(5, "new"), (4, "old")]
        assert plan.target == Target(5, "new")


class TestRealTimeWrites:
    def test_consume_rt_and_start_offsets_as_the_controller_says(self) -> None:
        extra = {2: {"rt_start_offsets": {"0": 5, "1": 6, "2": 7}, "consume_rt": True},
                 3: {"rt_start_offsets": {"0": 9, "1": 9, "2": 9}, "consume_rt": True}}
        plan = plan_hosting(description(2, [(2, "ONLINE"), (3, "STARTED")], hybrid=True, extra=extra), [1])
        by_version = {a.version: a for a in plan.assignments}
        assert by_version[2].rt_start_offsets == {0: 5, 1: 6, 2: 7}
        assert by_version[2].consume_rt and by_version[3].consume_rt
        assert by_version[2].hybrid is not None and by_version[2].hybrid.real_time_topic == "s_rt"

    def test_controller_rule_when_the_description_does_not_say(self) -> None:
        d = description(2, [(1, "ONLINE"), (2, "ONLINE"), (3, "ONLINE"), (4, "STARTED")], hybrid=True)
        assert [d.consumes_rt(v) for v in d.versions] == [False, True, True, True]
        assert not description(1, [(1, "ONLINE")]).consumes_rt(description(1, [(1, "ONLINE")]).versions[0])

    def test_the_served_version_keeps_applying_writes_while_its_successor_catches_up(self) -> None:
        serving = plan_hosting(description(1, [(1, "ONLINE")], hybrid=True), None).assignments[0]
        extra = {1: {"consume_rt": False}, 2: {"consume_rt": True}}
        plan = plan_hosting(description(2, [(1, "ONLINE"), (2, "ONLINE")], hybrid=True, extra=extra), None, serving)
        assert {a.version: a.consume_rt for a in plan.assignments} == {2: True, 1: True}

    def test_batch_only_stores_never_consume(self) -> None:
        plan = plan_hosting(description(1, [(1, "ONLINE"), (2, "STARTED")]), None)
        assert not any(a.consume_rt or a.hybrid for a in plan.assignments)


class TestDescriptions:
    @pytest.mark.parametrize(
        "body",
        [
            None, [], {"name": "s"},
            {"name": "s", "key_schema": "long", "value_schemas": {"1": "long"}, "partitions": 0, "current_version": None},
            {"name": "s", "key_schema": "long", "value_schemas": {}, "partitions": 1, "current_version": None},
            {"name": "s", "key_schema": "long", "value_schemas": {"1": "long"}, "partitions": 1, "current_version": "1"},
            {"name": "s", "key_schema": "long", "value_schemas": {"1": "long"}, "partitions": 1, "current_version": 1,
             "versions": [{"version": 1, "topic": "t", "partitions": 1, "status": "WEIRD"}]},
            {"name": "s", "key_schema": "long", "value_schemas": {"1": "long"}, "partitions": 1, "current_version": 1,
             "versions": [{"version": 1, "topic": "t", "partitions": 1, "status": "ONLINE", "rt_start_offsets": {"x": 1}}]},
        ],
    )
    def test_malformed_descriptions_are_request_errors(self, body: Any) -> None:
        with pytest.raises(RequestError):
            StoreDescription.from_json(body)


class TestLocalState:
    def test_round_trip(self) -> None:
        plan = plan_hosting(description(1, [(1, "ONLINE"), (2, "STARTED")], hybrid=True), [0])
        state = LocalState("s", "kafka://h:1", 1, "inc1", plan.assignments)
        again = LocalState.from_bytes(state.to_bytes())
        assert again == state
        assert again.serving_assignment() == plan.assignments[1]

    @pytest.mark.parametrize(
        "content",
        [b"", b"{", b"[]", b'{"format": 2}', b'{"format": 1, "store": 1, "assignments": []}',
         b'{"format": 1, "store": "s", "serving": "1", "assignments": []}',
         b'{"format": 1, "store": "s", "serving": 1, "assignments": [{"store": "other"}]}',
         b"\xff\xfe" * 10],
    )
    def test_torn_or_hostile_files_are_refused(self, content: bytes) -> None:
        with pytest.raises(RequestError):
            LocalState.from_bytes(content)
