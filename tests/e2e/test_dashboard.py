"""The controller's dashboard in a real browser (Debian's chromium driven by Playwright).

A real cluster (controller, 2 servers, a router) is pushed to and has a server killed
while one page stays open: the page must show the push going ONLINE and the server
going dead by itself (it polls), without a reload, load nothing from anywhere but the
controller, and show hostile text from a heartbeat as text.

``VENICE_SCREENSHOTS=DIR`` keeps the screenshots there (docs/ holds the ones in the README).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import create_store, make_records, push_process, write_jsonl
from venice.cluster import LocalCluster, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
STORE = "members"
PARTITIONS = 3
RECORDS = 20_000
WAIT_MS = 30_000


def _browser_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (deploy/setup.sh installs Debian's chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _browser_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"a browser is required in CI: {reason}", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("dashboard"), servers=2, dead_after_s=2.0) as cluster:
        yield cluster


class _Reads:
    """Reads through the router on a thread until the block ends (every answer must be 200)."""

    def __init__(self, router_url: str, keys: list[Any]) -> None:
        self.router_url, self.keys = router_url, keys
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                for key in self.keys:
                    if self._stop.is_set():
                        break
                    self.statuses.append(client.get(f"{self.router_url}/storage/{STORE}/{key}").status_code)

    def __enter__(self) -> _Reads:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        assert self.statuses and set(self.statuses) == {200}


def _started(controller_url: str, version: int) -> bool:
    """The version is open and being pushed (its records may not have reached a server yet:
    the push ships each partition sorted, so it can write everything in the last second)."""
    view = httpx.get(f"{controller_url}/overview", timeout=5).json()
    return any(
        store["name"] == STORE and v["version"] == version and v["status"] == "STARTED"
        for store in view["stores"]
        for v in store["versions"]
    )


def _shot(page: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("VENICE_SCREENSHOTS")
    if keep:
        shutil.copy(path, Path(keep) / name)


def test_the_page_follows_a_push_and_a_dead_server_without_reloading(browser: Any, cluster: LocalCluster, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    response = page.goto(cluster.controller_url + "/")
    assert response is not None and response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector('#connection[data-state="ok"]', timeout=WAIT_MS)
    page.wait_for_selector('tr[data-server="server-0"][data-state="live"]', timeout=WAIT_MS)
    page.wait_for_selector('tr[data-server="server-1"][data-state="live"]', timeout=WAIT_MS)
    page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page

    create_store(cluster.controller_url, STORE, partitions=PARTITIONS, replication_factor=2)
    page.wait_for_selector(f'tr[data-store="{STORE}"]', timeout=WAIT_MS)
    records = make_records(RECORDS)
    job = push_process(cluster.controller_url, STORE, write_jsonl(tmp_path / "in.jsonl", records))
    try:
        # Hold the push job once its version is open (SIGSTOP), so the page is seen showing it under way.
        wait_for(lambda: _started(cluster.controller_url, 1), 120, "the push to open its version", interval_s=0.02)
        os.kill(job.pid, signal.SIGSTOP)
        page.wait_for_selector(f'[data-version="{STORE}:1"][data-status="STARTED"]', timeout=WAIT_MS)
        page.wait_for_selector('[data-push="1"]', timeout=WAIT_MS)
        page.evaluate(f"window.location.hash = '#store={STORE}'")
        page.wait_for_selector(f'table[data-map="{STORE}:1"] td[data-replica]', timeout=WAIT_MS)
        _shot(page, tmp_path, "dashboard-push.png")
        page.evaluate("window.location.hash = ''")
    except BaseException:
        job.kill()  # the failure is what matters; nothing of the job must outlive the test
        job.communicate()
        raise
    finally:
        if job.returncode is None:
            os.kill(job.pid, signal.SIGCONT)
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr
    page.wait_for_selector(f'[data-version="{STORE}:1"][data-status="ONLINE"]', timeout=WAIT_MS)
    assert page.query_selector('[data-push="1"]') is None  # no push under way any more
    assert page.text_content(f'tr[data-store="{STORE}"] td:nth-child(2)') == "v1"
    # Reads through the router: its read rate and p99 reach the page (the controller scrapes it).
    with _Reads(cluster.router_url, [r["id"] for r in records[:500]]):
        page.wait_for_function(
            "() => { const c = document.querySelector('tr[data-router] td[data-reads]');"
            " return c !== null && parseFloat(c.textContent) > 0; }",
            timeout=WAIT_MS,
        )
        assert page.get_attribute("tr[data-router]", "data-router") == cluster.router_url
        assert (page.text_content("tr[data-router] td[data-p99]") or "").endswith(" ms")
        _shot(page, tmp_path, "dashboard.png")

    # The store's page: a hash change, not a navigation.
    page.click(f'tr[data-store="{STORE}"] a')
    page.wait_for_selector(f'tr[data-version-row="{STORE}:1"][data-status="ONLINE"]', timeout=WAIT_MS)
    cells = page.query_selector_all(f'table[data-map="{STORE}:1"] td[data-replica]')
    # Every partition on both servers (R=2 of 2), READY, with the records the push wrote to it.
    assert sorted(c.get_attribute("data-replica") for c in cells) == sorted(
        f"{p}@server-{s}" for p in range(PARTITIONS) for s in range(2)
    )
    assert {c.get_attribute("data-state") for c in cells} == {"READY"}
    per_server = [sum(int((c.text_content() or "").split("READY")[0].replace(",", "")) for c in cells if c.get_attribute("data-replica").endswith(f"@server-{s}")) for s in range(2)]  # type: ignore[union-attr]
    assert per_server == [RECORDS, RECORDS]
    assert "venice version list --controller " + cluster.controller_url in (page.text_content("#versions") or "")
    _shot(page, tmp_path, "dashboard-store.png")

    cluster.servers[1].kill()
    page.click("header h1 a")
    page.wait_for_selector('tr[data-server="server-1"][data-state="dead"]', timeout=WAIT_MS)
    assert page.get_attribute('tr[data-server="server-0"]', "data-state") == "live"
    assert "1 live, 0 draining, 1 dead servers" in (page.text_content("#summary") or "")
    _shot(page, tmp_path, "dashboard-dead.png")
    assert page.evaluate("window.__sameDocument") is True

    origin = cluster.controller_url
    assert requested and all(url.startswith(origin + "/") for url in requested), requested
    page.close()


def test_text_from_the_cluster_is_shown_as_text(browser: Any, cluster: LocalCluster) -> None:
    """A heartbeat's URL and a push job's failure reason are shown, never run as markup."""
    url = "http://<b>bold<i>italic"  # what the heartbeat's URL check lets through
    assert httpx.post(f"{cluster.controller_url}/servers/evil-1/heartbeat", json={"url": url, "replicas": []}, timeout=5).status_code == 200
    reason = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    opened = httpx.post(f"{cluster.controller_url}/stores/{STORE}/versions", json={}, timeout=10)
    assert opened.status_code == 201, opened.text
    number = opened.json()["version"]
    failed = httpx.post(f"{cluster.controller_url}/stores/{STORE}/versions/{number}/error", json={"reason": reason}, timeout=10)
    assert failed.status_code == 200, failed.text

    page = browser.new_page()
    page.goto(cluster.controller_url + "/")
    row = page.wait_for_selector('tr[data-server="evil-1"]', timeout=WAIT_MS)
    assert row is not None and url in (row.text_content() or "")
    assert page.query_selector("#view b, #view i") is None
    page.goto(f"{cluster.controller_url}/#store={STORE}")
    failed_row = page.wait_for_selector(f'tr[data-version-row="{STORE}:{number}"][data-status="ERROR"]', timeout=WAIT_MS)
    assert failed_row is not None and reason in (failed_row.text_content() or "")
    assert page.query_selector("#view img, #view script") is None
    assert page.evaluate("window.__pwned") is None
    page.close()


def test_the_page_says_when_the_controller_is_gone(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    with LocalCluster(tmp_path_factory.mktemp("dashboard-gone"), servers=0, routers=1) as cluster:
        page = browser.new_page()
        page.goto(cluster.controller_url + "/")
        page.wait_for_selector('#connection[data-state="ok"]', timeout=WAIT_MS)
        cluster.controller.stop()
        page.wait_for_selector('#connection[data-state="down"]', timeout=WAIT_MS)
        assert "unreachable" in (page.text_content("#connection") or "")
        page.close()


def test_a_closed_cluster_asks_for_a_token_and_keeps_it_in_the_tab(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """With a cluster secret and a token file, the page's files still load (they hold no
    data) but GET /overview is 401: the page asks for a token in a password field, sends it
    as a bearer header, keeps it in sessionStorage only and never in a URL; unknown, other
    roles' and non-ASCII tokens are refused with the controller's reason as text; a revoked
    token sends the page back to the question. The router panel shows the router up: the
    controller scrapes it with the cluster secret."""
    from venice.auth import Role, TokensFile, new_secret

    tmp = tmp_path_factory.mktemp("dashboard-closed")
    file = TokensFile(tmp / "tokens.json")
    monitor, monitor_entry = file.create(Role.MONITOR)
    reader = file.create(Role.READER)[0]
    with LocalCluster(tmp / "cluster", servers=1, routers=1, cluster_secret=new_secret(), tokens_file=file.path) as cluster:
        context = browser.new_context()
        page = context.new_page()
        sent: list[tuple[str, str | None]] = []
        page.on("request", lambda request: sent.append((request.url, request.headers.get("authorization"))))
        response = page.goto(cluster.controller_url + "/")
        assert response is not None and response.status == 200
        assert "script-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_selector('#signin input[type="password"]', timeout=WAIT_MS)
        assert page.get_attribute("#connection", "data-state") == "locked"
        assert page.query_selector("tr[data-server]") is None

        def refused_with(credential: str, words: str) -> None:
            page.fill("#token", credential)
            page.click("#sign-in")
            page.wait_for_function(
                "(words) => (document.getElementById('signin-error') || {}).textContent?.includes(words)", arg=words, timeout=WAIT_MS
            )
            assert page.evaluate("window.sessionStorage.length") == 0  # a refused token is not kept
            assert page.query_selector("tr[data-server]") is None

        refused_with("vt_" + "B" * 43, "not known here")  # 401
        refused_with(reader, "may not read metrics")  # 403: a known token of another role
        refused_with("vt_\u00fc\u4e16<b>x</b>", "not a valid token")  # the browser cannot send it
        assert page.query_selector("#signin b") is None  # nothing typed becomes markup

        page.fill("#token", monitor)
        page.press("#token", "Enter")
        page.wait_for_selector('tr[data-server="server-0"][data-state="live"]', timeout=WAIT_MS)
        page.wait_for_selector('tr[data-router][data-state="live"]', timeout=WAIT_MS)
        assert page.evaluate("window.sessionStorage.getItem('venice.token')") == monitor
        assert page.evaluate("window.localStorage.length") == 0 and page.evaluate("document.cookie") == ""
        overview = [auth for url, auth in sent if url == cluster.controller_url + "/overview"]
        assert f"Bearer {monitor}" in overview
        assert all(monitor not in url for url, _ in sent) and monitor not in page.url
        assert monitor not in page.content()

        # The tab keeps it across a reload; a new browser context (another tab's storage) asks again.
        page.reload()
        page.wait_for_selector('tr[data-server="server-0"]', timeout=WAIT_MS)
        other = browser.new_context().new_page()
        other.goto(cluster.controller_url + "/")
        other.wait_for_selector('#signin input[type="password"]', timeout=WAIT_MS)
        other.context.close()

        # Revoked: the next poll is a 401 and the page asks again, forgetting the token.
        file.revoke(monitor_entry.token_id)
        page.wait_for_selector('#signin input[type="password"]', timeout=WAIT_MS)
        assert "refused" in (page.text_content("#signin-error") or "")
        assert page.evaluate("window.sessionStorage.length") == 0
        assert all(url.startswith(cluster.controller_url + "/") for url, _ in sent)
        context.close()
