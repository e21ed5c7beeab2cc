"""Shared fixtures of the push tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def members() -> list[dict[str, Any]]:
    return [
        {"id": 1, "name": "ann", "score": 0.5, "emb": [0.1, 0.2], "tags": ["a"]},
        {"id": 2, "name": "bob", "score": 1.5, "emb": [0.3, 0.4], "tags": []},
        {"id": 3, "name": "cy", "score": 2.0, "emb": [0.5, 0.6], "tags": ["b", "c"]},
    ]
