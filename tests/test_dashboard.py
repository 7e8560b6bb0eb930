"""The live dashboard (evoforge/dashboard): who may answer, how a form becomes a decision, and the whole flow in a
real headless Chromium — a scripted circle_packing run seen live, a node opened, approvals answered by button."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from evoforge.dashboard.approvals import decision_from_form
from evoforge.memory.database import Database
from evoforge.memory.nodes import NodeStore

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).parent / "fixtures" / "scripts"
EVOFORGE = Path(sys.executable).parent / "evoforge"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "test-token-for-the-dashboard"
WAIT_MS = 300_000
"""A bound on each wait for the run to move on, never a timing assertion."""


def test_a_form_becomes_the_decision_evoforge_approve_sends() -> None:
    current = {"repeats": 2, "mode": "fast"}
    assert decision_from_form("approve", "", {"repeats": "2"}, current) == {
        "action": "approve", "settings": {}, "reason": ""}
    assert decision_from_form("edit", "", {"repeats": "1", "mode": '"fast"'}, current) == {
        "action": "edit", "settings": {"repeats": 1}, "reason": ""}
    assert decision_from_form("reject", " too costly ", {}, current)["reason"] == "too costly"
    with pytest.raises(ValueError, match="change at least one setting"):
        decision_from_form("edit", "", {"repeats": "2"}, current)
    with pytest.raises(ValueError, match="'maybe'"):
        decision_from_form("maybe", "", {}, current)


def test_answers_need_loopback_and_the_token() -> None:
    from starlette.testclient import TestClient

    from evoforge.dashboard.app import create_app

    remote = TestClient(create_app(token=TOKEN))  # the test client's address is not loopback
    refused = remote.post("/dashboard/approvals/some-run/0", data={"action": "approve", "token": TOKEN})
    assert refused.status_code == 403 and "read-only" in refused.text
    open_to_all = TestClient(create_app(token=TOKEN, remote_answers=True))
    refused = open_to_all.post("/dashboard/approvals/some-run/0", data={"action": "approve", "token": "wrong"})
    assert refused.status_code == 403 and "token" in refused.text


def _browser() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: install the dev extra (scripts/install.sh)", pytrace=False)
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/install.sh does it as root)",
                    pytrace=False)
    return sync_playwright


@pytest.fixture
def dashboard(database: Database, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`evoforge ui` on a free loopback port over the test's database; its URL and the environment."""
    from test_studio import free_loopback_port, wait_until_serving

    env = {**os.environ, "EVOFORGE_DATABASE_URL": database.url, "EVOFORGE_STATE_DIR": str(tmp_path / "state"),
           "EVOFORGE_DASHBOARD_TOKEN": TOKEN, "COLUMNS": "200"}
    port = free_loopback_port()
    log_path = tmp_path / "ui.log"
    log = log_path.open("wb")
    server = subprocess.Popen([str(EVOFORGE), "ui", "--port", str(port)], env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(server, f"{url}/dashboard/api/runs", log_path, "evoforge ui", request_timeout_s=5)
        yield url, env
    finally:
        server.terminate()
        server.wait(60)
        log.close()


@pytest.mark.integration
@pytest.mark.slow
def test_live_view_follows_a_run_and_buttons_answer_its_approvals(
        dashboard: tuple[str, dict[str, str]], database: Database, tmp_path: Path) -> None:
    url, env = dashboard
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump({
        "rounds": 2, "llm": {"provider": "scripted", "script": str(SCRIPTS / "approval.yaml")},
        "database_url": database.url, "state_dir": str(tmp_path / "state"),
        "sampling": {"policy": "greedy", "inspirations": 1},
        "novelty": {"duplicate_similarity": 0.9999, "judge_similarity": 0.9999}, "approval_cost_threshold": 0.005}))
    run = subprocess.Popen([str(EVOFORGE), "run", "circle_packing", "--config", str(config_file), "--run-id", "live"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with _browser()() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1100})
        live = context.new_page()
        live.goto(f"{url}/dashboard/?token={TOKEN}")
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/dashboard/api/runs/live", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the run was never recorded"
            time.sleep(0.5)
        live.goto(f"{url}/dashboard/runs/live")
        live.evaluate("window.__stayed = true")
        live.wait_for_function("document.querySelectorAll('#score-chart .point').length >= 1", timeout=WAIT_MS)
        seen = live.evaluate("document.querySelectorAll('#score-chart .point').length")
        output, _ = run.communicate(timeout=600)
        assert run.returncode == 0, output
        live.wait_for_selector("#approval-banner:not([hidden])", timeout=WAIT_MS)

        approvals = context.new_page()
        approvals.goto(f"{url}/dashboard/approvals")
        first = approvals.locator("article.approval").first
        assert "square_grid" in first.inner_text() and first.locator(".stage").inner_text() == "full"
        first.locator("input[name='setting.repeats']").fill("1")
        first.locator("button.edit").click()
        approvals.wait_for_selector("#notice", timeout=WAIT_MS)

        live.wait_for_function(f"document.querySelectorAll('#score-chart .point').length > {seen}", timeout=WAIT_MS)
        assert live.evaluate("window.__stayed === true"), "the chart grew without a reload"
        live.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        if os.environ.get("EVOFORGE_DASHBOARD_SCREENSHOT"):
            live.screenshot(path=os.environ["EVOFORGE_DASHBOARD_SCREENSHOT"], full_page=True)

        second = approvals.locator("article.approval", has_text="far_corner_gap")
        second.wait_for(timeout=WAIT_MS)
        second.locator("input[name='reason']").fill("not worth the full stage")
        second.locator("button.reject").click()
        live.wait_for_function("document.getElementById('run-status').textContent === 'finished'",
                               timeout=WAIT_MS)

        live.locator("#nodes a", has_text="square_grid").click()
        live.wait_for_selector("#node-name")
        assert live.inner_text("#node-name") == "square_grid"
        assert "A 5x5 grid fills the square" in live.inner_text("#motivation")
        assert "+    grid = (np.arange(5) + 0.5) / 5" in live.inner_text("#diff")
        assert "RESULT: the grid was evaluated" in live.inner_text("#analysis")
        assert live.locator("#calls details").count() >= 1
        browser.close()

    nodes = {node.round: node for node in NodeStore(database).list_nodes("live")}
    assert [nodes[r].status for r in (0, 1, 2)] == ["evaluated", "evaluated", "rejected_by_human"]
    assert nodes[1].stage_results[1]["metrics"]["repeats"] == 1
    assert "not worth the full stage" in (nodes[2].error or "")
