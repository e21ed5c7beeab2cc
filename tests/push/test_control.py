"""The controller calls of a push (venice.push.control) against a scripted controller (an
httpx transport): what is retried, what is not, what ends the wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from venice.controller_client import ControllerClient
from venice.errors import PushError, RequestError, StoreNotFoundError, TransportError, UnavailableError
from venice.push.control import DEFAULT_MAX_VALUE_BYTES, PushControl, VersionEnded
from venice.push.spark import refuse_unreachable_log
from venice.schema import MAX_KEY_BYTES

Handler = Callable[[httpx.Request], httpx.Response]


def control(handler: Handler) -> PushControl:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return PushControl("http://controller", client=ControllerClient("http://controller", http=http))


def error(status: int, code: str, message: str = "no") -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


def test_store_plan_takes_the_latest_value_schema_and_the_limits() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"key_schema": "long", "value_schemas": {"1": "string", "10": "double", "2": "int"},
                                         "max_value_bytes": 4096})

    plan = control(handler).store_plan("s")
    assert (plan.key_schema, plan.value_schema, plan.schema_id) == ("long", "double", 10)
    assert (plan.max_value_bytes, plan.max_key_bytes) == (4096, 511)


def test_store_plan_defaults_and_errors() -> None:
    plan = control(lambda r: httpx.Response(200, json={"key_schema": "long", "value_schemas": {"1": "string"}})).store_plan("s")
    assert plan.max_value_bytes == DEFAULT_MAX_VALUE_BYTES == 1 << 20 and MAX_KEY_BYTES == 511
    with pytest.raises(StoreNotFoundError):
        control(lambda r: error(404, "STORE_NOT_FOUND")).store_plan("s")
    with pytest.raises(PushError, match="has no value schema"):
        control(lambda r: httpx.Response(200, json={"key_schema": "long", "value_schemas": {}})).store_plan("s")


def test_a_push_in_progress_is_refused_as_is_and_nothing_retried() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return error(409, "PUSH_IN_PROGRESS", "version 3 of 's' is being pushed")

    with pytest.raises(RequestError) as caught:  # a refusal (ConflictError once the code is known), never retried
        control(handler).open_version("s", defer_swap=False)
    assert caught.value.message == "version 3 of 's' is being pushed"
    assert calls == ["/stores/s/versions"]


def test_end_is_retried_on_503_and_transport_errors_until_it_lands() -> None:
    answers: list[Any] = [error(503, "UNAVAILABLE"), httpx.ConnectError("refused"), httpx.Response(200, json={})]
    bodies: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(orjson.loads(request.content))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    control(handler).end("s", 4, 1234, deadline=time.monotonic() + 30)
    assert bodies == [{"records": 1234}] * 3


def test_end_gives_up_at_the_deadline_and_never_retries_a_refusal() -> None:
    attempts = 0

    def unavailable(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        return error(503, "UNAVAILABLE")

    with pytest.raises(UnavailableError):
        control(unavailable).end("s", 4, 1, deadline=time.monotonic())
    assert attempts == 1
    with pytest.raises(RequestError):
        control(lambda r: error(400, "BAD_REQUEST", "records do not match")).end("s", 4, 1, deadline=time.monotonic() + 30)


def test_await_online_ends_on_online_error_or_deadline() -> None:
    statuses = iter(["STARTED", "STARTED", "ONLINE"])
    control(lambda r: httpx.Response(200, json={"status": next(statuses)})).await_online("s", 4, time.monotonic() + 30, 0.0)
    with pytest.raises(VersionEnded, match=r"version 4 of 's' failed \(KILLED\): by an operator"):
        control(lambda r: httpx.Response(200, json={"status": "KILLED", "reason": "by an operator"})).await_online(
            "s", 4, time.monotonic() + 30, 0.0)
    stuck = {"status": "STARTED", "partitions": 2, "replicas": {"0": [{"status": "READY"}], "1": [{"status": "STARTED"}]}}
    with pytest.raises(PushError, match=r"timed out .* \(status STARTED; 1/2 partitions have a ready replica\)"):
        control(lambda r: httpx.Response(200, json=stuck)).await_online("s", 4, time.monotonic(), 0.0)


def test_fail_never_raises_and_ended_reads_the_controller() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    control(down).fail("s", 4, "x" * 5000)  # best effort: the push's own error matters more
    assert control(down).ended("s", 4) is None
    reasons: list[Any] = []
    control(lambda r: reasons.append(orjson.loads(r.content)) or httpx.Response(200, json={})).fail("s", 4, "y" * 5000)
    assert reasons == [{"reason": "y" * 2000}]
    ended = control(lambda r: httpx.Response(200, json={"status": "ERROR", "reason": "server failed"})).ended("s", 4)
    assert isinstance(ended, VersionEnded) and "server failed" in ended.message
    with pytest.raises(TransportError, match="cannot reach the controller at http://controller"):
        control(down).pubsub_url()


def test_the_embedded_log_is_refused_for_executors_elsewhere() -> None:
    refuse_unreachable_log("embedded:///var/venice/log", "local[*]")
    refuse_unreachable_log("embedded:///var/venice/log", "local-cluster[2,1,1024]")
    refuse_unreachable_log("kafka://broker:9092", "spark://master:7077")
    with pytest.raises(PushError, match=r"embedded log \(/var/venice/log\).*yarn cannot write it"):
        refuse_unreachable_log("embedded:///var/venice/log", "yarn")
