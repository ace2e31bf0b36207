"""The labeling UI in a real browser: sign-in link, keyboard labeling, skip, resume, and inert hostile markup."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from rlhf_assets.labeling.store import LabelStore
from tests.chromium_driver import chromium
from tests.labeling_helpers import XSS_RESPONSE, labeling_server, queue_tasks

pytestmark = pytest.mark.browser


def _wait_for_task(driver, previous: str | None = None) -> str:
    """The task id on the page once it changed from `previous` (or the 'All done' heading: returns 'done').

    The page swaps the form while it loads the next task: a form found just before the swap is stale by the time its
    attribute is read, which only means "not loaded yet", so the wait goes on."""
    def loaded(d):
        forms = d.find_elements(By.ID, "label-form")
        if forms and forms[0].get_attribute("data-task") != previous:
            return forms[0].get_attribute("data-task")
        return "done" if d.find_elements(By.ID, "done") else False
    return WebDriverWait(driver, 15, ignored_exceptions=(StaleElementReferenceException,)).until(loaded)


def _sign_in(driver, url: str, token: str, name: str) -> None:
    """Open the coordinator's link and confirm the account it names (a link alone signs nobody in); on the first
    visit to a batch, read the content warning and guidelines and start."""
    driver.get(f"{url}/login#token={token}")
    button = WebDriverWait(driver, 15).until(expected_conditions.element_to_be_clickable((By.ID, "confirm")))
    assert driver.find_element(By.ID, "account").text == name
    button.click()
    shown = WebDriverWait(driver, 15).until(
        lambda d: d.find_elements(By.ID, "start") or d.find_elements(By.ID, "label-form") or d.find_elements(
            By.ID, "done"))
    if shown[0].get_attribute("id") == "start":
        assert driver.find_element(By.ID, "content-warning").text.startswith("Content warning")
        shown[0].click()


def _press(driver, key: str) -> None:
    driver.find_element(By.TAG_NAME, "body").send_keys(key)


@pytest.fixture
def store(tmp_path: Path) -> LabelStore:
    return LabelStore(tmp_path / "labels.sqlite")


def test_keyboard_labeling_skip_and_resume(store: LabelStore, tmp_path: Path) -> None:
    tasks = queue_tasks(store, 5)
    token = store.add_annotator("carol")
    with labeling_server(store.path) as url:
        with chromium() as driver:
            _sign_in(driver, url, token, "carol")
            first = _wait_for_task(driver)
            assert "#token" not in driver.current_url  # the token is dropped from the address bar
            assert driver.find_element(By.ID, "annotator").text == "carol"
            assert first == tasks[0].task_id
            _press(driver, "1")  # A is better
            second = _wait_for_task(driver, first)
            _press(driver, "s")  # skip
            third = _wait_for_task(driver, second)
            _press(driver, "c")
            driver.switch_to.active_element.send_keys("B reads better; A rambles")
            driver.switch_to.active_element.send_keys("\ue00c")  # Escape leaves the comment box
            _press(driver, "3")  # B is better, with the comment
            fourth = _wait_for_task(driver, third)
            assert "You have labelled 2" in driver.find_element(By.ID, "mine").text
            driver.save_screenshot(str(tmp_path / "labeling.png"))
        with chromium() as driver:  # the browser was closed: a new one resumes where carol was
            _sign_in(driver, url, token, "carol")
            assert _wait_for_task(driver) == fourth
            _press(driver, "t")  # tie
            fifth = _wait_for_task(driver, fourth)
            _press(driver, "2")  # tie
            assert _wait_for_task(driver, fifth) == second  # only the skipped task is left
            _press(driver, "b")
            assert _wait_for_task(driver, second) == "done"
    labels = {label.task_id: label for label in store.labels(store.active_batch())}
    assert [labels[t].choice.value for t in (first, second, third, fourth, fifth)] == ["A", "B", "B", "tie", "tie"]
    assert labels[third].comment == "B reads better; A rambles"
    assert all(label.annotator == "carol" for label in labels.values())


def test_hostile_markup_in_responses_renders_as_text_and_runs_nothing(store: LabelStore, tmp_path: Path) -> None:
    queue_tasks(store, 1, hostile_first=True)
    token = store.add_annotator("dave")
    with labeling_server(store.path) as url, chromium() as driver:
        _sign_in(driver, url, token, "dave")
        _wait_for_task(driver)
        WebDriverWait(driver, 5).until(expected_conditions.presence_of_element_located((By.ID, "response-a")))
        shown = driver.find_element(By.ID, "response-a").text + driver.find_element(By.ID, "response-b").text
        assert XSS_RESPONSE in shown  # the markup is visible, character for character
        assert "<script>window.__pwned = 'prompt';</script>" in driver.find_element(By.ID, "prompt").text
        assert driver.execute_script("return window.__pwned === undefined")
        assert driver.find_elements(By.CSS_SELECTOR, "#prompt *, #response-a *, #response-b *") == []  # text only
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # noqa: B018
        driver.save_screenshot(str(tmp_path / "hostile.png"))
