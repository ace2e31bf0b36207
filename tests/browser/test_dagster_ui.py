"""The Dagster UI in a real browser: launchpad with typed config, materialization, metadata, cancellation.

`dagster dev -w workspace.yaml` runs on a free 127.0.0.1 port with its own persistent instance; CLI runs of
`dagster asset materialize` share that instance, as they do for users. Screenshots are kept in
`var/test-artifacts/ui/` (or `$RLHF_TEST_ARTIFACTS/ui/`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from dagster import DagsterRunStatus
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from rlhf_assets.presets import PROJECT_ROOT
from tests.chromium_driver import chromium, require_chromium
from tests.dagster_ui import DagsterDev, click, dagster_dev, dismiss_welcome, open_launchpad, set_launchpad_config

pytestmark = pytest.mark.browser
SCREENSHOTS = Path(os.environ.get("RLHF_TEST_ARTIFACTS", PROJECT_ROOT / "var" / "test-artifacts")) / "ui"


@pytest.fixture(scope="module")
def dev(tmp_path_factory, shared_hh_path: Path) -> Iterator[DagsterDev]:
    require_chromium()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with dagster_dev(tmp_path_factory.mktemp("ui")) as running:
        yield running


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def _body(driver: WebDriver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def _launch(driver: WebDriver) -> None:
    click(driver, "//div[contains(@class, 'bp5-dialog')]//button[normalize-space()='Materialize']")


def test_materialize_from_the_launchpad_and_see_the_metadata(dev: DagsterDev, browser: WebDriver) -> None:
    # a CLI user's run, in the same instance the UI shows
    upstream = dev.materialize("hub_snapshots/preference_data,hh_raw")
    assert upstream.returncode == 0, upstream.stderr[-3000:]

    open_launchpad(browser, dev, "preference_dataset")
    set_launchpad_config(browser, "resources:\n  preset:\n    config:\n      name: huge\n")
    WebDriverWait(browser, 30).until(lambda d: "resources:preset:config:name not in enum type PresetName" in _body(d))
    set_launchpad_config(browser, "ops:\n  preference_dataset:\n    config:\n      test_fraction: 2.0\n")
    WebDriverWait(browser, 30).until(lambda d: "test_fraction" in _body(d) and "ERRORS" in _body(d).upper())
    browser.save_screenshot(str(SCREENSHOTS / "launchpad-invalid-config.png"))
    set_launchpad_config(browser, "resources:\n  preset:\n    config:\n      name: tiny\n"
                                  "ops:\n  preference_dataset:\n    config:\n      test_fraction: 0.1\n")
    WebDriverWait(browser, 30).until(lambda d: "No errors" in _body(d))
    browser.save_screenshot(str(SCREENSHOTS / "launchpad.png"))
    _launch(browser)
    WebDriverWait(browser, 60).until(lambda d: "/runs/" in d.current_url)
    run = dev.wait_for_run("preference_dataset", {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE}, timeout=300)
    assert run.status == DagsterRunStatus.SUCCESS
    assert run.run_config["ops"]["preference_dataset"]["config"]["test_fraction"] == 0.1
    WebDriverWait(browser, 60).until(lambda d: "Success" in _body(d))
    browser.save_screenshot(str(SCREENSHOTS / "run-success.png"))

    browser.get(f"{dev.url}/assets/preference_dataset")
    WebDriverWait(browser, 60).until(lambda d: "content_hash" in _body(d) and "preview" in _body(d))
    browser.save_screenshot(str(SCREENSHOTS / "asset-metadata.png"))
    preview = browser.find_element(By.XPATH, "//td[normalize-space()='preview']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", preview)
    row = preview.find_element(By.XPATH, "./ancestor::tr[1]")
    assert "Show table" in row.text or "prompt" in row.text, row.text
    browser.save_screenshot(str(SCREENSHOTS / "asset-metadata-tables.png"))
    click(browser, "//button[normalize-space()='Plots']")
    WebDriverWait(browser, 30).until(lambda d: "train_rows" in _body(d))
    browser.save_screenshot(str(SCREENSHOTS / "asset-metadata-plots.png"))

    downstream = dev.materialize("eval_prompts")  # the CLI builds on the UI's materialization
    assert downstream.returncode == 0, downstream.stderr[-3000:]
    browser.get(f"{dev.url}/runs")
    WebDriverWait(browser, 60).until(lambda d: "eval_prompts" in _body(d) and "preference_dataset" in _body(d))
    browser.save_screenshot(str(SCREENSHOTS / "runs.png"))


def _step_processes(step: str, dev: DagsterDev) -> list[psutil.Process]:
    """This `dagster dev`'s processes of `step` (its model directory is under the dev's scratch), not another
    run's on the same machine (the recipe's miniature runs beside the suite)."""
    scratch = dev.env["RLHF_SCRATCH_DIR"]
    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        if f"rlhf_assets.steps.{step}" in " ".join(process.info["cmdline"] or []) and \
                (process.info["environ"] or {}).get("SM_MODEL_DIR", "").startswith(scratch):
            found.append(process)
    return found


def test_cancelling_a_run_in_the_ui_stops_its_step_process(dev: DagsterDev, browser: WebDriver) -> None:
    prepared = dev.materialize("hub_snapshots/preference_data,hub_snapshots/base_model,hh_raw,preference_dataset,"
                               "base_model")
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    open_launchpad(browser, dev, "sft_model")
    set_launchpad_config(browser, "ops:\n  sft_model:\n    config:\n      recompute: true\n")
    WebDriverWait(browser, 30).until(lambda d: "No errors" in _body(d))
    _launch(browser)
    deadline = time.monotonic() + 180
    while not (processes := _step_processes("sft", dev)):
        assert time.monotonic() < deadline, "the sft step process never started"
        time.sleep(0.5)
    click(browser, "//button[normalize-space()='Terminate']")
    browser.save_screenshot(str(SCREENSHOTS / "terminate-dialog.png"))
    click(browser, "//button[normalize-space()='Terminate 1 run']")
    run = dev.wait_for_run("sft_model", {DagsterRunStatus.CANCELED, DagsterRunStatus.FAILURE,
                                         DagsterRunStatus.SUCCESS}, timeout=180)
    assert run.status == DagsterRunStatus.CANCELED
    gone, alive = psutil.wait_procs(processes, timeout=60)
    assert alive == [], f"step processes still running after the cancel: {alive}"
    WebDriverWait(browser, 60).until(lambda d: "Canceled" in _body(d))
    browser.save_screenshot(str(SCREENSHOTS / "run-canceled.png"))
    assert not (dev.artifacts / "manifests" / "sft_model").exists()
    published = dev.artifacts / "sft_model"
    assert not published.exists() or not any((p / "_COMPLETE").exists() for p in published.iterdir())


@pytest.mark.graph
def test_the_policy_comparison_page_shows_every_policy_with_intervals(graph, tmp_path: Path,
                                                                      browser: WebDriver) -> None:
    """The tiny graph's project (artifacts and instance, copied) served by `dagster dev`: the comparison's page
    shows its summary, and its table, rendered in the metadata, lists PPO and DPO with their CIs; the curve's and
    the toxicity asset's pages show the over-optimisation curve and the two scorers' agreement."""
    require_chromium()
    root, _, _ = graph
    shutil.copytree(root / "artifacts", tmp_path / "artifacts")
    shutil.copytree(root / "dagster_home", tmp_path / "dagster_home")
    with dagster_dev(tmp_path) as served:
        browser.get(f"{served.url}/assets/policy_comparison")
        WebDriverWait(browser, 120).until(lambda d: all(key in _body(d) for key in ("summary", "policy_table",
                                                                                      "versions")))
        dismiss_welcome(browser)
        browser.save_screenshot(str(SCREENSHOTS / "policy-comparison.png"))
        label = browser.find_element(By.XPATH, "//td[normalize-space()='policy_table']")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", label)
        table = label.find_element(By.XPATH, "./ancestor::tr[1]").text  # inline: the UI folds 1,000+ characters
        assert "RM gain" in table and "judge win rate" in table and "verdict" in table, table
        assert "\nPPO " in table and "\nDPO " in table and "optimised against" in table, "a row per policy"
        browser.save_screenshot(str(SCREENSHOTS / "policy-comparison-table.png"))
        # Issue 26: the over-optimisation curve and the second scorer's agreement are on their assets' pages.
        for asset, labels in (("ppo_policy/overoptimisation_curve", ("curve_table", "judge_peak_step", "plot")),
                              ("ppo_policy/toxicity_scores",
                               ("scorers", "toxicity_table", "the scorers' verdicts agree"))):
            browser.get(f"{served.url}/assets/{asset}")
            WebDriverWait(browser, 120).until(lambda d, labels=labels: all(label in _body(d) for label in labels))
            browser.save_screenshot(str(SCREENSHOTS / f"{asset}.png"))
