"""The page at ``GET /`` in headless Chromium: a person pastes tweets, clicks Predict and reads the bars.

The service runs in uvicorn on a free port (a thread of this process) over the tiny TF-IDF ensemble;
Playwright drives the system Chromium (Debian package ``chromium``; .ci/run installs it). Skipped
only when Chromium is absent.
"""

import shutil
import socket
import threading
import time

import numpy as np
import pytest

from embedensemble import EMOTIONS, EmotionEnsemble

from .tiny_ensemble import shared_tiny_ensemble

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install -y chromium)")
TWEETS = ["so happy and delighted today with friends", "furious rage at the bus again <b>not bold</b>"]


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory):
    return shared_tiny_ensemble(tmp_path_factory)


@pytest.fixture(scope="module")
def server_url(ensemble_dir):
    uvicorn = pytest.importorskip("uvicorn")
    from embedensemble.serve import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # a free port, held from the start so no other process can take it
    server = uvicorn.Server(uvicorn.Config(create_app(ensemble_dir, max_batch=3, max_chars=100), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (drives the system chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_pasted_tweets_show_probability_bars_and_labels(browser, server_url, ensemble_dir):
    page = browser.new_page()
    page.goto(server_url)
    page.fill("#texts", "\n".join(TWEETS) + "\n\n")  # blank lines are ignored
    page.click("#predict")
    page.wait_for_selector(".result")
    cards = page.query_selector_all(".result")
    assert [c.query_selector(".text").inner_text() for c in cards] == TWEETS  # HTML in a tweet is shown as text

    ensemble = EmotionEnsemble.load(ensemble_dir, use_cache=False)
    proba, decided = ensemble.predict_proba(TWEETS).to_numpy(), ensemble.predict(TWEETS).to_numpy()
    for k, card in enumerate(cards):
        bars = card.eval_on_selector_all(
            ".bar", "els => els.map(e => [e.dataset.emotion, Number(e.dataset.probability), e.getBoundingClientRect().width,"
            " e.parentElement.getBoundingClientRect().width, e.classList.contains('decided')])"
        )
        assert [b[0] for b in bars] == list(EMOTIONS)
        np.testing.assert_allclose([b[1] for b in bars], proba[k], atol=1e-6)
        # each bar's drawn length is its probability, as a share of its track
        np.testing.assert_allclose([b[2] / b[3] for b in bars], proba[k], atol=0.01)
        expected_labels = [e for j, e in enumerate(EMOTIONS) if decided[k, j]]
        assert [b[0] for b in bars if b[4]] == expected_labels
        assert [chip.inner_text() for chip in card.query_selector_all(".label")] == expected_labels
        assert len(card.query_selector_all(".threshold")) == len(EMOTIONS)
    assert [chip.inner_text() for chip in cards[0].query_selector_all(".label")] == ["joy"]
    assert page.inner_text("#error") == ""
    page.close()


def test_errors_are_shown_on_the_page(browser, server_url):
    page = browser.new_page()
    page.goto(server_url)
    page.click("#predict")
    assert page.inner_text("#error") == "Paste at least one tweet."
    page.fill("#texts", "x" * 101)  # over the server's max_chars: the server's 413 message is shown
    page.click("#predict")
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    assert "texts[0] has 101 characters; the limit is 100" in page.inner_text("#error")
    assert page.query_selector_all(".result") == []
    page.close()
