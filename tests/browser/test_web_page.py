"""The web page in headless Chromium: classify, correct, see the correction in the review queue.

The app runs under uvicorn on 127.0.0.1 (a free port, a background thread) with a seeded runtime: the
fake encoder, SQLite and in-memory Qdrant. Screenshots go to tests/artifacts/ (git-ignored; override
with JOBCLASS_TEST_ARTIFACTS). Without Chromium the test skips locally and fails under CI=true.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient

from app.db import migrate
from app.main import create_app
from app.runtime import Runtime
from indexing.extract import DEFAULT_LABELS, Extraction, Span, compact_string
from tests.conftest import IN_CI, make_settings
from tests.factories import ServerThread, seed
from tests.fakes import FakeEncoder

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("JOBCLASS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("JOBCLASS_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("JOBCLASS_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "artifacts"))
WAIT_S = 30

GUARD_AD = """<h2>Night security officer</h2>
<p>We are looking for a night shift guard for CCTV surveillance of our warehouse in Odense.
Contact jobs@example.com or +45 12 34 56 78.</p>"""
CORRECTED = "Vagt, sikkerhed og overvågning"
CORRECTED_NAME = "Security, guarding and surveillance"
SECOND_AD = "nurse for elderly care and medication rounds on a hospital ward"
SECOND_LABEL = "Sundhed, omsorg og personlig pleje"


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (shutil.which(path) or Path(path).is_file()):
            return f"{path} is missing (apt-get install -y chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def browser_ready() -> None:
    reason = _missing()
    if reason:
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: the browser test must run)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def server(browser_ready: None, tmp_path: Path) -> Iterator[ServerThread]:
    settings = make_settings(tmp_path)
    migrate(settings.db_url)
    runtime = Runtime(settings, encoder=FakeEncoder(), qdrant=QdrantClient(":memory:"))
    try:
        seed(runtime, tmp_path)
        with ServerThread(create_app(settings, runtime)) as running:
            yield running
    finally:
        runtime.close()


class TermExtractor:
    """A stand-in for GLiNER: finds a few known job titles and skills, and the name after "Contact"."""

    signature = "gliner:fake|browser-test"
    TERMS = (("title", ("carpenter", "nurse", "guard")), ("skills", ("scaffolding", "timber", "cctv")))

    def extract(self, texts: Sequence[str]) -> list[Extraction]:
        out = []
        for text in texts:
            spans = [
                Span(DEFAULT_LABELS[role], role, m.group(), m.start(), m.end(), 0.9)
                for role, words in self.TERMS
                for word in words
                for m in re.finditer(rf"\b{word}\b", text, re.IGNORECASE)
            ]
            spans += [
                Span("person", "person", m.group(1), m.start(1), m.end(1), 0.8)
                for m in re.finditer(r"Contact ([A-Z]\w+ [A-Z]\w+)", text)
            ]
            spans.sort(key=lambda s: s.start)
            out.append(Extraction(compact_string(spans), tuple(spans)))
        return out


@pytest.fixture
def extracting_server(browser_ready: None, tmp_path: Path) -> Iterator[ServerThread]:
    """The app with an extractor configured: answers explain which terms were embedded."""
    settings = make_settings(tmp_path, extractor_model="fake-gliner")
    migrate(settings.db_url)
    runtime = Runtime(settings, encoder=FakeEncoder(), extractor=TermExtractor(), qdrant=QdrantClient(":memory:"))
    try:
        seed(runtime, tmp_path)
        with ServerThread(create_app(settings, runtime)) as running:
            yield running
    finally:
        runtime.close()


@pytest.fixture
def driver(browser_ready: None, tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    chrome.set_page_load_timeout(WAIT_S)
    try:
        yield chrome
    finally:
        chrome.quit()


def api(server: ServerThread, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        server.url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=WAIT_S) as response:
        return json.loads(response.read())


def screenshot(driver: Any, name: str) -> Path:
    """The whole page: the window is stretched to the document's height first."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1280, max(800, min(height + 200, 4000)))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), path
    return path


def test_classify_correct_and_review(server: ServerThread, driver: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(driver, WAIT_S)
    ready = (By.CSS_SELECTOR, "body[data-ready='true']")

    # 1. classify, from the keyboard: the textarea has a label and Ctrl+Enter submits
    driver.get(server.url + "/")
    wait.until(ec.presence_of_element_located(ready))
    assert driver.find_element(By.CSS_SELECTOR, "label[for='text']").text == "Vacancy text"
    text = driver.find_element(By.ID, "text")
    text.send_keys(GUARD_AD)
    text.send_keys(Keys.CONTROL, Keys.ENTER)
    wait.until(ec.visibility_of_element_located((By.ID, "result-body")))
    result = driver.find_element(By.ID, "result-body")
    prediction_id = result.get_attribute("data-prediction-id")
    assert prediction_id
    assert driver.find_element(By.ID, "result").get_attribute("aria-live") == "polite"
    assert driver.find_element(By.ID, "result-label").text
    bars = driver.find_elements(By.CSS_SELECTOR, "#probabilities li")
    assert len(bars) == 5
    assert all(b.find_element(By.CSS_SELECTOR, ".value").text.endswith("%") for b in bars)
    neighbours = driver.find_elements(By.CSS_SELECTOR, "#neighbours tr")
    assert neighbours and all(len(r.find_elements(By.TAG_NAME, "td")) == 3 for r in neighbours)
    assert "Classified" in driver.find_element(By.ID, "classify-status").text

    # 2. one-click correction
    options = Select(driver.find_element(By.ID, "correct-label")).options
    assert len(options) == 22
    Select(driver.find_element(By.ID, "correct-label")).select_by_value(CORRECTED)
    driver.find_element(By.ID, "correct-button").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "correct-status"), "Saved"))
    assert CORRECTED_NAME in driver.find_element(By.ID, "correct-status").text
    screenshot(driver, "web-classify.png")

    # 3. the review queue shows the correction; a reviewer labels another prediction
    second = api(server, "/v1/classify", {"text": SECOND_AD})["prediction_id"]
    driver.set_window_size(1280, 1000)
    driver.find_element(By.LINK_TEXT, "Review queue").click()
    wait.until(ec.presence_of_element_located(ready))
    confidence = driver.find_element(By.ID, "max-confidence")
    confidence.clear()
    confidence.send_keys("100", Keys.ENTER)  # percent; the fake encoder is very sure of itself
    corrected = (By.CSS_SELECTOR, f"li[data-prediction-id='{prediction_id}']")
    wait.until(ec.text_to_be_present_in_element(corrected, f"Reviewed: {CORRECTED_NAME}"))
    assert "max_confidence=1" in driver.current_url

    item = driver.find_element(By.CSS_SELECTOR, f"li[data-prediction-id='{second}']")
    assert "Needs review" in item.text
    Select(item.find_element(By.TAG_NAME, "select")).select_by_value(SECOND_LABEL)
    item.find_element(By.CSS_SELECTOR, "button[type='submit']").click()
    wait.until(
        ec.text_to_be_present_in_element(
            (By.CSS_SELECTOR, f"li[data-prediction-id='{second}']"), "Reviewed: Health, care and personal care"
        )
    )
    stored = {p["id"]: p for p in api(server, "/v1/predictions?limit=10")["predictions"]}
    assert stored[prediction_id]["reviewed_label"] == CORRECTED
    assert stored[second]["reviewed_label"] == SECOND_LABEL
    screenshot(driver, "web-review.png")

    # 4. "only unreviewed" hides both
    driver.find_element(By.ID, "unreviewed").click()
    driver.find_element(By.ID, "refresh").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "queue-summary"), "Nothing to review"))
    assert not driver.find_elements(By.CSS_SELECTOR, "li[data-prediction-id]")

    # 5. a reviewer retracts the second correction: the item needs review again, and the server agrees
    driver.find_element(By.ID, "unreviewed").click()
    driver.find_element(By.ID, "refresh").click()
    second_item = (By.CSS_SELECTOR, f"li[data-prediction-id='{second}']")
    wait.until(ec.text_to_be_present_in_element(second_item, "Reviewed:"))
    retract = driver.find_element(*second_item).find_element(By.CSS_SELECTOR, "button.retract")
    assert retract.is_displayed()
    retract.click()
    wait.until(ec.text_to_be_present_in_element(second_item, "Needs review"))
    assert not driver.find_element(*second_item).find_element(By.CSS_SELECTOR, "button.retract").is_displayed()
    stored = {p["id"]: p for p in api(server, "/v1/predictions?limit=10")["predictions"]}
    assert stored[second]["reviewed_label"] is None and stored[second]["feedback_count"] == 0
    assert stored[prediction_id]["reviewed_label"] == CORRECTED  # the other correction stands


def test_extracted_terms_are_shown_when_an_extractor_is_active(server: ServerThread, driver: Any) -> None:
    """Without an extractor the section stays hidden (the answer's `extraction` is null)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT_S)
    driver.get(server.url + "/")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-ready='true']")))
    driver.find_element(By.ID, "text").send_keys(SECOND_AD)
    driver.find_element(By.ID, "classify-button").click()
    wait.until(ec.visibility_of_element_located((By.ID, "result-body")))
    assert not driver.find_element(By.ID, "extraction").is_displayed()


def test_extracted_terms_with_an_extractor(extracting_server: ServerThread, driver: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT_S)
    driver.get(extracting_server.url + "/")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-ready='true']")))
    driver.find_element(By.ID, "text").send_keys(
        "Carpenter for timber framing and scaffolding. Contact Jens Hansen for details."
    )
    driver.find_element(By.ID, "classify-button").click()
    wait.until(ec.visibility_of_element_located((By.ID, "extraction")))
    terms = driver.find_element(By.ID, "extraction-terms")
    names = [dt.text for dt in terms.find_elements(By.TAG_NAME, "dt")]
    values = [
        [t.text for t in dd.find_elements(By.CLASS_NAME, "term")] for dd in terms.find_elements(By.TAG_NAME, "dd")
    ]
    assert dict(zip(names, values, strict=True)) == {"Job title": ["Carpenter"], "Skills": ["timber", "scaffolding"]}
    embedded = driver.find_element(By.ID, "extraction-embedded").text
    assert embedded.startswith("title: Carpenter") and "scaffolding" in embedded
    assert "Jens" not in terms.text and "Jens" not in embedded  # names are found to be scrubbed, never shown
    screenshot(driver, "web-extraction.png")
