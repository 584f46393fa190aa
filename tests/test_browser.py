"""In a real browser (headless Chromium): the committed report, and the MLflow UI on a finished sweep.

Driven by the `playwright` package against Debian's `chromium` (no browser download). Screenshots are
saved under test-artifacts/ (report.png, mlflow_runs.png). Without Chromium or playwright the tests
skip with the reason; with REPRO_REQUIRE_BROWSER=1 (set by .ci/run) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support import REPO_ROOT

from repro.ui_url import runs_page_url

ARTIFACTS = REPO_ROOT / "test-artifacts"
#: Root needs --no-sandbox; the rest keep Chromium off the (closed) network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


def _chromium_or_skip() -> str:
    path = shutil.which("chromium")
    reason = None
    if path is None:
        reason = "Debian's chromium is not installed (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright package is not installed (pip install -e '.[dev]')"
    if reason:
        if os.environ.get("REPRO_REQUIRE_BROWSER") == "1":
            pytest.fail(f"REPRO_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def test_committed_report_loads_whole_in_chromium(browser) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto((REPO_ROOT / "paper" / "report.html").as_uri(), wait_until="load")
    widths = page.eval_on_selector_all("img", "images => images.map(i => i.naturalWidth)")
    assert len(widths) == 8 and all(width > 0 for width in widths), widths
    assert "81.39%" in page.locator(".headline").inner_text()
    assert errors == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    page.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def finished_sweep(finished_sweep_once) -> str:
    """A store holding one finished sweep of two jobs, made by the real command line (once a session)."""
    return finished_sweep_once.tracking_uri


@pytest.fixture
def mlflow_ui(finished_sweep: str, tmp_path: Path) -> Iterator[int]:
    """`mlflow ui` on the sweep's store, on a free port; stopped (its whole process group) afterwards."""
    port = _free_port()
    log = (tmp_path / "mlflow-ui.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", finished_sweep,
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if process.poll() is not None or time.monotonic() > deadline:
                    output = (tmp_path / "mlflow-ui.log").read_text()[-2000:]
                    pytest.fail(f"mlflow ui did not start: {output}")
                time.sleep(0.5)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_mlflow_runs_page_lists_the_sweeps_child_runs(browser, mlflow_ui: int) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(runs_page_url("127.0.0.1", mlflow_ui, "1"))
    sweep_row = page.locator('[role="row"]').filter(has_text="sweep-").first
    sweep_row.wait_for(timeout=90_000)
    assert page.get_by_text("Model training").first.is_visible()  # the URL chose the training view
    # The sweep is a parent run; its row expands to list the jobs, as a user clicks "+".
    sweep_row.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
    for name in ("mobilenet_v2-cpu-s0", "resnet18-cpu-s0"):
        page.get_by_text(name).first.wait_for(timeout=30_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "mlflow_runs.png"))
    page.close()
