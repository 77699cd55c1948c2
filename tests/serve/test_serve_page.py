"""The page `fournil serve --index` shows at /, in a real browser: Debian's headless Chromium
driven by selenium through Debian's chromedriver, against a real `fournil serve` process on
127.0.0.1 (the tiny random model, whose answers open with a quote: `--answer-prefix`). The
question is typed, the answer streams in, the quote is a highlighted link to its passage,
which shows the document's title and license; a screenshot is kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fournil.formats.citations import is_verbatim

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# Debian's chromium as root, in a sandbox without network: no sandbox (root), no GPU, /tmp
# rather than a small /dev/shm, and none of the background calls home
CHROME_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1200,900"]
# where a person finds the screenshot after a run (git-ignored)
ARTIFACTS = Path(__file__).resolve().parents[2] / "runs" / "artifacts"
QUESTION = "Dans quelle famille d'araignées se trouve le genre Deinopis ?"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium "
           "chromium-driver; .ci/run installs them)")]


@pytest.fixture(scope="module")
def page_server(start_fournil_serve, tiny_rag_model_dir, wiki_index_dir):
    return start_fournil_serve(tiny_rag_model_dir, "--index", str(wiki_index_dir),
                               "--answer-prefix", '<ref name="')


@pytest.fixture
def browser(tmp_path, monkeypatch):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_AVOID_STATS", "true")  # Selenium's telemetry: no network here
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    # the driver's path given: Selenium Manager, which would try to download one, never runs
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def test_a_question_streams_a_cited_answer_linked_to_its_passage(page_server, browser,
                                                                  tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page_server.url.removesuffix("/v1") + "/")
    assert browser.title.startswith("fournil")
    browser.find_element(By.ID, "q").send_keys(QUESTION)
    browser.find_element(By.ID, "go").click()
    wait = WebDriverWait(browser, 120)
    # the status says so when the stream has ended ([DONE]); an error would say "erreur"
    wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-state")
               in ("done", "error"))
    status = browser.find_element(By.ID, "status")
    assert status.get_attribute("data-state") == "done", status.text
    assert status.text == "terminé"

    cite = browser.find_element(By.CSS_SELECTOR, "#answer a.cite")
    ref = cite.get_attribute("data-ref")
    quote = cite.find_element(By.TAG_NAME, "mark").text
    assert cite.get_attribute("href").endswith(f"#src-{ref}")
    passage = browser.find_element(By.ID, f"src-{ref}")
    assert "Deinopis" in passage.find_element(By.TAG_NAME, "header").text  # the title
    assert "CC-BY-SA-4.0" in passage.find_element(By.CLASS_NAME, "license").text
    text = passage.find_element(By.TAG_NAME, "p").text
    assert is_verbatim(quote, text), (quote, text)
    # the quote is highlighted in the passage too, from the citation's offsets
    assert is_verbatim(passage.find_element(By.CSS_SELECTOR, "p mark").text, quote)

    cite.click()
    wait.until(lambda d: d.execute_script("return location.hash") == f"#src-{ref}")
    assert browser.execute_script("return document.querySelector(':target').id") == f"src-{ref}"
    assert not browser.find_elements(By.CSS_SELECTOR, "#answer a.cite.unverified")

    shot = tmp_path / "serve-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / shot.name)
