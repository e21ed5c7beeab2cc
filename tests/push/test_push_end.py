"""The push job's end-of-push call and the store's limits (issue 8, items 2 and 7), against the
fake controller of test_push_job.py: ``POST .../end`` is retried through controller outages
until the push deadline, the exit follows what the controller decided, and keys and values
that cannot be stored are refused with their position."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from venice.errors import InvalidInputError, PushError

from .files import write_jsonl
from .test_push_job import ROWS, FakeController, run


class FlakyController(FakeController):
    """``/end`` meets ``failures`` outages first (connection refused or 503, alternately)."""

    def __init__(self, failures: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failures = failures
        self.end_calls = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/end"):
            self.end_calls += 1
            if self.end_calls <= self.failures:
                self.calls.append((request.method, request.url.path, "outage"))
                if self.end_calls % 2:
                    raise httpx.ConnectError("connection refused", request=request)
                return httpx.Response(503, json={"error": {"code": "UNAVAILABLE", "message": "restarting"}})
        return super().handle(request)


class LimitedController(FakeController):
    """A store whose description carries its push timeout and value size limit."""

    def __init__(self, *, max_value_bytes: int | None = None, push_timeout_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.extra = {"max_value_bytes": max_value_bytes, "push_timeout_s": push_timeout_s}

    def handle(self, request: httpx.Request) -> httpx.Response:
        response = super().handle(request)
        if request.method == "GET" and request.url.path == "/stores/members":
            import orjson

            body = {**orjson.loads(response.content), **{k: v for k, v in self.extra.items() if v is not None}}
            return httpx.Response(200, json=body)
        return response


async def test_end_of_push_is_retried_through_an_outage(tmp_path: Path) -> None:
    controller = FlakyController(failures=3)
    summary, _ = await run(controller, write_jsonl(tmp_path / "m.jsonl", ROWS))
    assert summary.records == 20 and controller.end_calls == 4
    assert controller.paths("POST").count("/stores/members/versions/4/end") == 4
    assert "/stores/members/versions/4/error" not in controller.paths()


async def test_end_of_push_unanswered_until_the_deadline_fails_the_push(tmp_path: Path) -> None:
    controller = FlakyController(failures=10**6)
    with pytest.raises(PushError, match=r"could not tell the controller that members v4 is complete before the push deadline"):
        await run(controller, write_jsonl(tmp_path / "m.jsonl", ROWS), timeout_s=1.0)
    assert controller.status == "ERROR"  # reported failed (the fake took the /error call)
    assert controller.end_calls >= 2


async def test_the_stores_push_timeout_bounds_the_wait_too(tmp_path: Path) -> None:
    controller = LimitedController(push_timeout_s=1.0, final_status="STARTED")
    with pytest.raises(PushError, match=r"timed out at the store's push timeout \(1 s\)"):
        await run(controller, write_jsonl(tmp_path / "m.jsonl", ROWS), timeout_s=600)


class OnlineAtTheLastMoment(FakeController):
    """The version goes ONLINE just as the job gives up: its /error call is refused."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/error"):
            self.calls.append((request.method, request.url.path, None))
            self.status = "ONLINE"
            return httpx.Response(409, json={"error": {"code": "CONFLICT", "message": "version 4 is already ONLINE"}})
        return super().handle(request)


async def test_a_version_that_went_online_as_the_job_gave_up_is_a_success(tmp_path: Path) -> None:
    controller = OnlineAtTheLastMoment(final_status="STARTED")
    summary, _ = await run(controller, write_jsonl(tmp_path / "m.jsonl", ROWS), timeout_s=0.05)
    assert summary.records == 20
    assert "/stores/members/versions/4/error" in controller.paths()


async def test_a_key_longer_than_lmdb_takes_fails_with_its_position(tmp_path: Path) -> None:
    rows = [{"id": f"k{i}", "name": "n"} for i in range(5)] + [{"id": "x" * 510, "name": "n"}]
    path = write_jsonl(tmp_path / "k.jsonl", rows)
    controller = FakeController(key_schema="string")
    with pytest.raises(InvalidInputError) as caught:
        await run(controller, path)
    assert caught.value.message == f"{path}: line 6: key is 512 bytes serialized; keys may be at most 511 bytes (the storage engine's limit)"
    assert ("POST", "/stores/members/versions/4/error", {"reason": caught.value.message}) in controller.calls


async def test_a_first_record_too_large_fails_before_a_version_is_opened(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "v.jsonl", [{"id": 1, "name": "x" * 200}])
    controller = LimitedController(max_value_bytes=100)
    with pytest.raises(InvalidInputError, match=r"line 1: value is 20\d bytes serialized; the store takes values of at most 100 bytes"):
        await run(controller, path)
    assert controller.paths("POST") == []


async def test_a_value_larger_than_the_store_takes_fails_with_its_position(tmp_path: Path) -> None:
    rows = [{"id": i, "name": "n"} for i in range(3)] + [{"id": 9, "name": "x" * 100}]
    path = write_jsonl(tmp_path / "v.jsonl", rows)
    controller = LimitedController(max_value_bytes=100)
    with pytest.raises(InvalidInputError) as caught:
        await run(controller, path)
    # name: a 2-byte length (zig-zag 200) + 100 bytes; score: the union's null branch, 1 byte: 103 bytes.
    assert caught.value.message == (
        f"{path}: line 4: value is 103 bytes serialized; the store takes values of at most 100 bytes "
        "(max_value_bytes; venice store update --max-value-size)"
    )
    assert "/stores/members/versions/4/end" not in controller.paths()
    summary, _ = await run(LimitedController(max_value_bytes=103), path)
    assert summary.records == 4
