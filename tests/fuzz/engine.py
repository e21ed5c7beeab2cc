"""Schemathesis run by hand over every operation of an OpenAPI document (its pytest
plugin does not work with this pytest), under a fixed, derandomized example budget."""

from __future__ import annotations

from collections.abc import Callable

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
"""No 5xx; status, content type and body as documented."""
BUDGET = settings(max_examples=12, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def _run_one(operation: schemathesis.APIOperation, url: str, headers: dict[str, str], mode: GenerationMode) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @BUDGET
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=url, headers=headers, checks=CHECKS)
        anonymous = case.call(base_url=url)  # and without credentials: refused, never a 5xx
        assert anonymous.status_code < 500, anonymous.text

    run()


def fuzz(api: schemathesis.BaseSchema, url: str, headers_for: Callable[[str], dict[str, str]], *, negative: bool) -> list[str]:
    """Every operation of ``api`` against ``url``; the labels of those that ran. In negative
    mode an operation with nothing to make invalid (no parameters, no body) is left out."""
    mode = GenerationMode.NEGATIVE if negative else GenerationMode.POSITIVE
    ran = []
    for result in api.get_all_operations():
        operation = result.ok()
        try:
            _run_one(operation, url, headers_for(operation.label), mode)
        except Unsatisfiable:
            if not negative:
                raise
            continue
        ran.append(operation.label)
    return ran
