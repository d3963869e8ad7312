"""Screenshots of the web page for the README, from a running server (the real model, not a fake).

    .venv/bin/jobclass serve --port 18090 &          # with its own JOBCLASS_STATE_DIR
    .venv/bin/python -m tests.browser.readme_screenshot http://127.0.0.1:18090 docs/img
    (with JOBCLASS_ADMIN_TOKEN set when the server has one: the review queue needs it)

Classifies an ad in headless Chromium (/usr/bin/chromium + chromedriver), saves the answer as
``web-classify.png``, then opens the review queue (predictions at or below 97% confidence) and saves
``web-review.png``. Nothing is corrected: the screenshots must not write feedback into the server's data.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from tests.browser.test_web_page import CHROMEDRIVER, CHROMIUM, WAIT_S

AD = """Tømrer / carpenter for our renovation team in Aarhus.
We are looking for a skilled carpenter with a journeyman's certificate for roofing, timber framing and
window replacement on residential sites. You work with a team of six, drive the company van and
plan your own day. Driving licence B required."""


def main(url: str, out: Path, token: str = "") -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"):
            options.add_argument(flag)
        options.add_argument("--window-size=1200,900")
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        try:
            wait = WebDriverWait(driver, WAIT_S)
            driver.get(url + "/")
            wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-ready='true']")))
            driver.find_element(By.ID, "text").send_keys(AD)
            driver.find_element(By.ID, "classify-button").click()
            wait.until(ec.visibility_of_element_located((By.ID, "result-body")))
            height = int(driver.execute_script("return document.documentElement.scrollHeight"))
            driver.set_window_size(1200, min(max(900, height + 120), 2400))
            driver.save_screenshot(str(out / "web-classify.png"))

            if token:  # the page keeps the token in sessionStorage, as the "API token" field does
                driver.execute_script("sessionStorage.setItem('jobclass.token', arguments[0])", token)
            driver.get(url + "/review?max_confidence=0.97")
            wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-ready='true']")))
            driver.set_window_size(1200, 900)
            driver.save_screenshot(str(out / "web-review.png"))
        finally:
            driver.quit()
    print(f"wrote {out / 'web-classify.png'} and {out / 'web-review.png'}")


if __name__ == "__main__":
    main(
        sys.argv[1].rstrip("/"),
        Path(sys.argv[2]) if len(sys.argv) > 2 else Path("docs/img"),
        os.environ.get("JOBCLASS_ADMIN_TOKEN", ""),
    )
