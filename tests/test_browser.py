"""The Dagster UI in a real browser: headless Debian Chromium, driven by Playwright.

The test builds a small warehouse with the tiny models (``python -m dagster_project.run`` on a
temp DAGSTER_HOME), starts ``dagster dev`` on 127.0.0.1 (its own process group, killed at the
end), then, in the browser: finds the asset graph, launches the ``evaluate`` job from the
launchpad, waits for the run to succeed, opens evaluation.report's latest materialization and
checks that its metadata (tables and PNG charts) rendered. Screenshots go to
``var/screenshots/`` (``LLAMBERT_SCREENSHOT_DIR=docs`` refreshes the README's).

Needs /usr/bin/chromium (``make test-browser`` installs it with apt). Playwright never
downloads a browser of its own here: it launches the system one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from llambert.config import PROJECT_ROOT
from tests.conftest import tiny_settings_dict

pytestmark = [pytest.mark.browser, pytest.mark.timeout(1200)]  # about 2 min on a quiet 2-core machine

CHROMIUM = os.environ.get("LLAMBERT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(os.environ.get("LLAMBERT_SCREENSHOT_DIR") or PROJECT_ROOT / "var" / "screenshots")
if not SCREENSHOTS.is_absolute():
    SCREENSHOTS = PROJECT_ROOT / SCREENSHOTS
ASSET_NAMES = ["corpus", "sample", "llm_responses", "parsed_labels", "discarded", "checkpoints", "labels", "report"]
VIEWPORT = {"width": 1600, "height": 1000}


def shown(page, text: str, exact: bool = True):
    """The first *visible* element with this text (hidden copies, e.g. tooltips, are skipped)."""
    return page.get_by_text(text, exact=exact).filter(visible=True).first


@contextlib.contextmanager
def snapshot_on_failure(page, name: str) -> Iterator[None]:
    """A failing step leaves var/screenshots/failed_<name>.png behind, to see what the page showed."""
    try:
        yield
    except BaseException:
        out = PROJECT_ROOT / "var" / "screenshots"
        out.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(out / f"failed_{name}.png"))
        raise


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        body = json.load(r)
    assert "errors" not in body, body
    return body["data"]


def wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Until /server_info answers and the code location has loaded (or dagster dev died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5) as r:
                if r.status == 200:
                    data = graphql(
                        url,
                        "{ workspaceOrError { ... on Workspace { locationEntries { name "
                        "loadStatus locationOrLoadError { __typename } } } } }",
                    )
                    entries = data["workspaceOrError"]["locationEntries"]
                    if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                        kinds = {e["locationOrLoadError"]["__typename"] for e in entries}
                        assert kinds == {"RepositoryLocation"}, f"code location failed to load: {entries}"
                        return
        except (OSError, KeyError):
            pass
        time.sleep(1)
    raise TimeoutError(f"dagster dev did not come up on {url} in {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def dagster_dev(env: dict, log: Path) -> Iterator[str]:
    """``dagster dev`` in its own process group on a free port; the whole group is stopped after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster"),
                "dev",
                "-w",
                "workspace.yaml",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_server(url, proc, log)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers: code server, daemon, run workers
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def ui(tmp_path_factory, small_corpus, tiny_models) -> Iterator[str]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: run `make test-browser` (installs Debian's chromium with apt)")
    root = tmp_path_factory.mktemp("browser")
    cfg = root / "llambert.yaml"
    cfg.write_text(yaml.safe_dump(tiny_settings_dict(root / "home", small_corpus, tiny_models)))
    from dagster_project.instance import DAGSTER_YAML

    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "LLAMBERT_CONFIG": str(cfg),
        "LLAMBERT_NO_PROGRESS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    # The whole pipeline once, on the same instance, so every asset has a materialization.
    built = subprocess.run(
        [sys.executable, "-m", "dagster_project.run", "--config", str(cfg)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    with dagster_dev(env, root / "dagster_dev.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser_page(ui, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium_profile")),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport=VIEWPORT,
        )
        page = ctx.new_page()
        page.set_default_timeout(120_000)  # a loaded 2-core machine renders slowly
        # Dagster's first-visit "Join the community" dialog covers the page: dismiss it whenever it shows.
        page.add_locator_handler(
            page.get_by_text("Join the Dagster community"), lambda: page.get_by_role("button", name="Skip").click()
        )
        try:
            yield page
        finally:
            ctx.close()


def open_menu(page, button, tries: int = 5) -> None:
    """Click a menu button until its menu shows: the community dialog's handler may run in
    between (it appears on a timer) and its click closes the menu the first click opened."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(tries):
        button.click()
        try:
            page.get_by_role("menuitem").first.wait_for(timeout=15_000)
            return
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise
            page.keyboard.press("Escape")


def expand_all_groups(page, tries: int = 5) -> None:
    """Settings menu -> "Expand all groups" (unless the groups are expanded already), retried as a
    whole: a dialog that appears in between closes the menu and detaches its items."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(tries):
        open_menu(page, page.get_by_role("button", name="settings", exact=True))
        expand = page.get_by_role("menuitem", name=re.compile("Expand all groups"))
        if not expand.count():  # "Collapse all groups": expanded already
            page.keyboard.press("Escape")
            return
        try:
            expand.click(timeout=15_000)
            return
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise
            page.keyboard.press("Escape")


def test_asset_graph_shows_every_asset(ui, browser_page):
    page = browser_page
    with snapshot_on_failure(page, "test_asset_graph_shows_every_asset"):
        page.goto(f"{ui}/asset-groups", wait_until="domcontentloaded")
        for group in ("ingest", "labeling", "training", "inference", "quality"):
            shown(page, group).wait_for()
        expand_all_groups(page)
        for name in ASSET_NAMES:
            shown(page, name).wait_for()
        page.wait_for_timeout(1500)  # let the graph finish its zoom-to-fit animation
        page.screenshot(path=str(SCREENSHOTS / "asset_graph.png"))
        # One group up close: each node with its latest materialization, checks and kinds.
        page.goto(f"{ui}/locations/llambert/asset-groups/labeling", wait_until="domcontentloaded")
        for text in ("parsed_labels", "llm_responses", "llm_cache", "cost_projection"):
            shown(page, text).wait_for()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(SCREENSHOTS / "asset_group_labeling.png"))
        # The labeling group has a dozen nodes: zoomed to fit, the graph hides their tags. The inference
        # group's one node is drawn large enough to show its kinds and its checks.
        page.goto(f"{ui}/locations/llambert/asset-groups/inference", wait_until="domcontentloaded")
        for text in ("labels", "PyTorch", "DuckDB", "Asset checks"):
            shown(page, text).wait_for()


def test_launch_job_and_see_metadata(ui, browser_page):
    page = browser_page
    with snapshot_on_failure(page, "test_launch_job_and_see_metadata"):
        # The launchpad: its config editor shows the resource's self-explaining fields.
        page.goto(f"{ui}/locations/llambert/jobs/evaluate/playground", wait_until="domcontentloaded")
        launch = page.get_by_role("button", name=re.compile("launch run", re.I))
        launch.wait_for()
        shown(page, "No errors").wait_for()
        launch.click()
        page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"), timeout=60_000)
        run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
        # Wait for the run to finish as the UI shows it.
        deadline = time.monotonic() + 300
        status = None
        while time.monotonic() < deadline:
            status = graphql(
                ui, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id}
            )["runOrError"]["status"]
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(2)
        assert status == "SUCCESS", f"run {run_id} ended {status}"
        shown(page, "Success").wait_for()
        (PROJECT_ROOT / "var" / "screenshots").mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(PROJECT_ROOT / "var" / "screenshots" / "run.png"))  # not for the README

        # The asset's latest materialization comes from our run, and its metadata rendered.
        data = graphql(
            ui,
            '{ assetOrError(assetKey: {path: ["evaluation", "report"]}) { ... on Asset { '
            "assetMaterializations(limit: 1) { runId } } } }",
        )
        assert data["assetOrError"]["assetMaterializations"][0]["runId"] == run_id
        # The Events tab opens on the latest materialization: ours, with its metadata.
        page.goto(f"{ui}/assets/evaluation/report?view=events", wait_until="domcontentloaded")
        shown(page, run_id[:8], exact=False).wait_for()
        for key in (
            "report",
            "confusion_matrix",
            "confusion_counts",
            "time_per_stage",
            "stage_costs",
            "student_accuracy_vs_gold",
            "dagster/row_count",
        ):
            shown(page, key).wait_for()
        shown(page, "accuracy_vs_gold", exact=False).wait_for()  # inside the rendered report table
        # Charts are markdown images (inline PNG); the UI shows long markdown in a dialog.
        for key in ("time_per_stage", "confusion_matrix"):
            row = page.locator("tr", has=page.get_by_text(key, exact=True))
            row.get_by_text("Show Markdown").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text(key).first.wait_for()
            img = dialog.locator("img[src^='data:image/png;base64']")
            img.wait_for()
            page.wait_for_function("i => i.complete && i.naturalWidth > 100", arg=img.element_handle())
            if key == "confusion_matrix":
                page.screenshot(path=str(SCREENSHOTS / "materialization_metadata.png"))
            else:
                dialog.get_by_role("button", name="Close").click()
                dialog.wait_for(state="hidden")
