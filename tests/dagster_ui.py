"""`dagster dev` as users start it (webserver + daemon on one persistent instance), for browser tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from rlhf_assets.presets import PROJECT_ROOT
from tests.servers import free_port, wait_until_serving

VENV_BIN = Path(sys.executable).parent


@dataclass
class DagsterDev:
    """A running `dagster dev`: its URL, the environment CLI users share with it, and its instance."""

    url: str
    env: dict[str, str]
    home: Path
    artifacts: Path

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(str(self.home))

    def wait_for_run(self, asset: str, statuses: set[DagsterRunStatus], timeout: float = 300) -> DagsterRun:
        """The newest run that materializes `asset`, once it reaches one of `statuses`."""
        deadline = time.monotonic() + timeout
        with self.instance() as instance:
            while True:
                runs = [run for run in instance.get_runs(RunsFilter())
                        if run.asset_selection and any(key.to_user_string() == asset for key in run.asset_selection)]
                if runs and runs[0].status in statuses:
                    return runs[0]
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no run of {asset} reached {statuses}: {[(r.run_id, r.status) for r in runs]}")
                time.sleep(1)

    def materialize(self, select: str) -> subprocess.CompletedProcess:
        """`dagster asset materialize` against the same instance, as a CLI user beside the UI would run it."""
        return subprocess.run([str(VENV_BIN / "dagster"), "asset", "materialize", "-m", "rlhf_assets.definitions",
                               "--select", select], cwd=PROJECT_ROOT, env=self.env, capture_output=True, text=True,
                              timeout=600)


@contextmanager
def dagster_dev(root: Path) -> Iterator[DagsterDev]:
    """Start `dagster dev -w workspace.yaml` on a free 127.0.0.1 port with everything under `root`."""
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DAGSTER_HOME": str(home), "RLHF_ARTIFACT_ROOT": str(root / "artifacts"),
           "RLHF_SCRATCH_DIR": str(root / "scratch"), "RLHF_LABELING_DB": str(root / "labels.sqlite"),
           "RLHF_PRESET": "tiny"}
    port = free_port()
    log = (root / "dagster-dev.log").open("w")
    process = subprocess.Popen(
        [str(VENV_BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{url}/server_info", process, root / "dagster-dev.log", timeout=120)
        yield DagsterDev(url, env, home, root / "artifacts")
    finally:
        _stop_group(process)
        log.close()


def _stop_group(process: subprocess.Popen) -> None:
    """Ctrl-C for the whole `dagster dev` process group (webserver, daemon, code server), then SIGKILL. The UI
    tests need no graceful shutdown, and `dagster dev` waits on the browser's open connections: 2 s is enough."""
    for sig, wait in ((signal.SIGINT, 2), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            time.sleep(1)
        except subprocess.TimeoutExpired:
            continue
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def click(driver: WebDriver, xpath: str, timeout: float = 60) -> None:
    WebDriverWait(driver, timeout).until(expected_conditions.element_to_be_clickable((By.XPATH, xpath))).click()


def dismiss_welcome(driver: WebDriver) -> None:
    """Close Dagster's one-time community dialog if it shows."""
    try:
        click(driver, "//button[normalize-space()='Skip']", timeout=5)
    except Exception:  # noqa: BLE001 - the dialog is optional; absent is fine
        return


def open_launchpad(driver: WebDriver, dev: DagsterDev, asset: str) -> None:
    """The asset page's Materialize menu → Open launchpad."""
    driver.get(f"{dev.url}/assets/{asset}")
    WebDriverWait(driver, 60).until(expected_conditions.presence_of_element_located(
        (By.XPATH, "//button[normalize-space()='Materialize']")))
    dismiss_welcome(driver)
    click(driver, "//span[button[normalize-space()='Materialize']]/following-sibling::span/button")
    click(driver, "//*[normalize-space()='Open launchpad']")
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "return !!document.querySelector('.CodeMirror') && !!document.querySelector('.CodeMirror').CodeMirror"))


def set_launchpad_config(driver: WebDriver, yaml_text: str) -> None:
    driver.execute_script("document.querySelector('.CodeMirror').CodeMirror.setValue(arguments[0])", yaml_text)
