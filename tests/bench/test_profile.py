"""The summary of py-spy's collapsed stacks that `python -m bench --profile` reports."""

from __future__ import annotations

from pathlib import Path

from bench.profile import layer_of, render, summarise

STACKS = """\
run (uvloop/__init__.py:82);handle (/x/site-packages/uvicorn/protocols/http/httptools_impl.py:190) 50
run (uvloop/__init__.py:82);__call__ (/w/router/app.py:80);single_get (/w/router/app.py:143) 30
run (uvloop/__init__.py:82);_get (/w/server/app.py:120);get (/w/server/storage.py:77) 15
run (uvloop/__init__.py:82);select (/usr/lib/python3.11/selectors.py:468) 5
"""


def test_layers_follow_the_innermost_frame() -> None:
    assert layer_of("handle (/x/site-packages/uvicorn/protocols/http/httptools_impl.py:190)").startswith("http server")
    assert layer_of("_write (/w/venice/httpserver.py:229)").startswith("http server")
    assert layer_of("single_get (/w/router/app.py:143)") == "router (router/)"
    assert layer_of("get (/w/server/storage.py:77)") == "storage server (server/, venice/ingestion/)"
    assert layer_of("decode (/w/venice/schema.py:10)") == "sdk and core (venice/)"
    assert layer_of("select (/usr/lib/python3.11/selectors.py:468)").startswith("event loop")
    assert layer_of("<module> (<string>:1)").startswith("other")


def test_summary_shares_and_busy_fraction(tmp_path: Path) -> None:
    stacks = tmp_path / "s.txt"
    stacks.write_text(STACKS)
    summary = summarise(stacks, seconds=1.0, rate_hz=200)
    assert summary["samples"] == 100
    assert summary["busy_pct"] == 50.0  # 100 samples of a possible 200
    assert summary["by_layer"] == {
        "http server (venice/httpserver.py, uvicorn, httptools)": 50.0,
        "router (router/)": 30.0,
        "storage server (server/, venice/ingestion/)": 15.0,
        "event loop (asyncio, uvloop)": 5.0,
    }
    assert summary["top_self"][0] == ["handle (/x/site-packages/uvicorn/protocols/http/httptools_impl.py:190)", 50.0]
    text = "\n".join(render({"router_get/router": {"what": "router", **summary}}))
    assert "on CPU 50.0% of one core" in text and "router (router/) 30.0%" in text


def test_cpu_seconds_of_a_process_grow_with_its_work() -> None:
    import os
    import time

    from bench.cli import cpu_seconds

    before = cpu_seconds(os.getpid())
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    assert 0.1 < cpu_seconds(os.getpid()) - before < 5
