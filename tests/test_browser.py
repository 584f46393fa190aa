"""In a real browser (headless Chromium): the reports (the committed one, a first sweep's), and the MLflow UI.

Driven by the `playwright` package against Debian's `chromium` (no browser download). Screenshots are
saved under test-artifacts/ (report.png, report_first_sweep.png, mlflow_runs.png, mlflow_energy_view.png).
Without Chromium or playwright the tests skip with the reason; with REPRO_REQUIRE_BROWSER=1 (set by
.ci/run) they fail instead.
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
from mlflow.tracking import MlflowClient
from tests.support import REPO_ROOT
from tests.test_report import first_sweep_report

from repro.ui_url import main as ui_url_main
from repro.ui_url import runs_page_url
from repro.ui_views import ENERGY_VIEW_KEY, VIEW_URL_PARAMETER

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
    assert page.locator(".caveat").count() == 0  # 25+ runs per group: nothing to qualify
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # T7 scrolls inside
    assert errors == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    page.close()


#: True when the page is no wider than the window and every table fits its box without scrolling.
_FITS = """() => document.documentElement.scrollWidth <= window.innerWidth
    && [...document.querySelectorAll('.scroll')].every(box => box.scrollWidth <= box.clientWidth)"""


def test_a_first_sweeps_report_says_first_that_it_cannot_test_yet(browser, tmp_path: Path) -> None:
    """`make run`'s store (two jobs, one run per group): the caveat, above the untested reduction."""
    report = tmp_path / "report.html"
    report.write_text(first_sweep_report(tmp_path), encoding="utf-8")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(report.as_uri(), wait_until="load")
    caveat, claim = page.locator(".caveat"), page.locator(".headline")
    assert caveat.is_visible() and claim.is_visible()
    text = caveat.inner_text()
    assert text.startswith("Too few runs for a test:")
    assert "a test needs at least 3 runs per group. Train 2 more seeds of each" in text
    assert caveat.bounding_box()["y"] < claim.bounding_box()["y"]  # read before the reduction it qualifies
    widths = page.eval_on_selector_all("img", "images => images.map(i => i.naturalWidth)")
    assert len(widths) == 5 and all(width > 0 for width in widths), widths
    assert page.evaluate(_FITS)
    assert errors == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report_first_sweep.png"), full_page=True)
    page.close()


def test_a_table_with_long_reasons_wraps_inside_the_page(browser, tmp_path: Path) -> None:
    """Three seeds: the tests run, and T3a's "Skipped" reason for GPU usage wraps instead of running off."""
    report = tmp_path / "report.html"
    report.write_text(first_sweep_report(tmp_path, seeds=3), encoding="utf-8")
    page = browser.new_page(viewport={"width": 1024, "height": 900})
    page.goto(report.as_uri(), wait_until="load")
    assert page.locator(".caveat").count() == 0
    reason = page.locator("#t3a_rq1_omnibus").get_by_text("fewer than 2 groups with 3+ runs; no test")
    assert reason.is_visible()
    assert page.evaluate(_FITS)
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


def _printed_link(tracking_uri: str, port: int, capsys: pytest.CaptureFixture[str]) -> str:
    """The link `make ui` prints (`python -m repro.ui_url`) for the store, on the given port."""
    capsys.readouterr()
    ui_url_main(["--uri", tracking_uri, "--host", "127.0.0.1", "--port", str(port)])
    return capsys.readouterr().out.strip().rsplit(" ", 1)[-1]


@pytest.mark.slow
def test_the_printed_link_opens_every_job_as_a_row_sorted_by_energy_per_image(
    browser, mlflow_ui: int, finished_sweep: str, capsys
) -> None:
    link = _printed_link(finished_sweep, mlflow_ui, capsys)
    assert f"{VIEW_URL_PARAMETER}={ENERGY_VIEW_KEY}" in link
    client = MlflowClient(finished_sweep)
    jobs = [r for r in client.search_runs(["1"]) if r.data.tags.get("repro.kind") != "sweep"]
    jobs.sort(key=lambda job: job.data.metrics["energy_j_per_image"])
    cheapest_first = [job.info.run_name for job in jobs]
    assert len(cheapest_first) == 2

    page = browser.new_page(viewport={"width": 1600, "height": 900})
    page.goto(link)
    header = page.locator('.ag-header-cell[col-id="metrics.`energy_j_per_image`"]')
    header.wait_for(timeout=90_000)
    assert header.is_visible() and "energy_j_per_image" in header.inner_text()
    for name in cheapest_first:  # each job its own row, with no parent row to expand
        page.locator(".ag-row").filter(has_text=name).first.wait_for(timeout=30_000)
    rows = page.evaluate(
        """() => {
            const rows = {};
            for (const row of document.querySelectorAll('.ag-row[row-index]')) {
                const index = Number(row.getAttribute('row-index'));
                const cell = row.querySelector('[col-id="metrics.`energy_j_per_image`"]');
                const name = row.querySelector('[col-id="attributes.`Run Name`"]');
                rows[index] = {...rows[index], ...(cell ? {energy: cell.innerText} : {}),
                               ...(name ? {name: name.innerText} : {})};
            }
            return Object.keys(rows).sort((a, b) => a - b).map(index => rows[index]);
        }"""
    )
    for row in rows:  # the run-name cell also holds the run's colour label, on a line of its own
        row["name"] = row.get("name", "").strip().split("\n")[-1]
    shown = [row for row in rows if row["name"] in cheapest_first]
    assert [row["name"] for row in shown] == cheapest_first, rows
    energies = [float(row["energy"]) for row in shown]
    assert energies == sorted(energies), rows

    # The README's advice: the Assistant panel closes with its x, and stays closed. (Not a reload: the UI
    # has put the view's sort into the URL by now, and a URL with a sort skips the view's columns.)
    page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]').click()
    page.goto("about:blank")
    page.goto(link)
    header.wait_for(timeout=90_000)
    assert page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]').count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "mlflow_energy_view.png"))
    page.close()
