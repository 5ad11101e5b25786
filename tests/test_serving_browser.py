"""The web page in headless Chromium: pick a user, watch a video, see the feed react."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from serving_processes import serve_in_thread

from shortrec.data.dataset import load_prepared
from shortrec.data.histories import Histories
from shortrec.models.base import Recommender
from shortrec.serving.app import create_app
from shortrec.serving.demo import fabricate_release
from shortrec.serving.feed import Feed, ServedModel
from shortrec.serving.store import SQLiteEventStore

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "serving_page.png"


@dataclasses.dataclass
class LastVideoNeighbours(Recommender):
    """Test-only sequence model: the videos closest in id to the newest view rank first."""

    name: ClassVar[str] = "last-video-neighbours"
    _fitted: ClassVar[bool] = True  # nothing to learn: it may score without `fit`

    def score(self, user_ids, video_ids, histories: Histories) -> np.ndarray:
        out = np.zeros((len(user_ids), len(video_ids)), dtype=np.float32)
        for row, user_id in enumerate(user_ids):
            videos, _ = histories.views_of(int(user_id))
            if len(videos):
                out[row] = -np.abs(np.asarray(video_ids) - videos[-1])
        return out


@pytest.fixture()
def server_url(tmp_path):
    pytest.importorskip("uvicorn")
    release = fabricate_release(tmp_path / "data", n_users=20, n_videos=150, views_per_user=6)
    data = load_prepared(release)
    feed = Feed(ServedModel(LastVideoNeighbours(), name="sequence demo"), data.videos,
                data.big_matrix)  # fmt: skip
    app = create_app(feed, SQLiteEventStore(tmp_path / "events.db"))
    with serve_in_thread(app) as port:
        yield f"http://127.0.0.1:{port}"


def test_watching_a_video_updates_the_feed_and_history(server_url, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server_url)
            page.wait_for_selector("[data-testid=user-select] option", state="attached")
            page.select_option("[data-testid=user-select]", "3")
            page.wait_for_function(
                "document.querySelector('#status').textContent.startsWith('User 3:')"
            )
            feed = page.locator("[data-testid=feed-item]")
            before = [feed.nth(i).get_attribute("data-video-id") for i in range(feed.count())]
            assert len(before) == 12
            assert page.locator("[data-testid=history-item]").count() > 0
            assert page.locator(".card .chip").count() > 0  # categories are shown
            watched = before[5]
            feed.nth(5).locator("[data-testid=watch]").click()
            page.wait_for_function(
                "id => document.querySelector('[data-testid=history-item]')"
                "?.dataset.videoId === id",
                arg=watched,
            )
            page.wait_for_function(
                "old => [...document.querySelectorAll('[data-testid=feed-item]')]"
                ".map(e => e.dataset.videoId).join() !== old",
                arg=",".join(before),
            )
            after = [feed.nth(i).get_attribute("data-video-id") for i in range(feed.count())]
            assert after != before and watched not in after
            # The sequence model now centres the feed on the watched video.
            assert min(abs(int(v) - int(watched)) for v in after) == 1
            newest = page.locator("[data-testid=history-item]").first
            assert "live" in newest.inner_text()
            shot = tmp_path / "serving_page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("SHORTREC_UPDATE_DOCS"):  # refresh the README's picture
                DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
                shutil.copyfile(shot, DOCS_SCREENSHOT)
        finally:
            browser.close()


def test_ids_stay_exact_and_a_failed_load_clears_the_feed(server_url):
    """9007199254740993 is not a JS number (2^53 + 1): the page must not ask for ...992."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    import httpx

    big = "9007199254740993"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server_url)
            page.wait_for_selector("[data-testid=user-select] option", state="attached")
            page.fill("[data-testid=user-input]", big)
            page.click("[data-testid=load-user]")
            page.wait_for_function(
                "id => document.querySelector('#status').textContent.startsWith(`User ${id}:`)",
                arg=big,
            )
            feed = page.locator("[data-testid=feed-item]")
            assert feed.count() == 12
            watched = feed.nth(0).get_attribute("data-video-id")
            feed.nth(0).locator("[data-testid=watch]").click()
            page.wait_for_function(
                "id => document.querySelector('[data-testid=history-item]')"
                "?.dataset.videoId === id",
                arg=watched,
            )
            page.wait_for_function(
                "document.querySelector('#status').textContent.startsWith('Watched')"
            )
            exact = httpx.get(f"{server_url}/users/{big}/history").json()
            rounded = httpx.get(f"{server_url}/users/9007199254740992/history").json()
            assert exact["total"] == 1 and exact["items"][0]["video_id"] == int(watched)
            assert rounded["total"] == 0

            for bad in ("99999999999999999999", "12abc"):  # beyond int64; not a number
                page.fill("[data-testid=user-input]", bad)
                page.click("[data-testid=load-user]")
                page.wait_for_function("document.querySelector('#status.error') !== null")
                assert feed.count() == 0
                assert page.locator("[data-testid=history-item]").count() == 0
                assert page.locator("[data-testid=watch]").count() == 0
                page.fill("[data-testid=user-input]", "3")  # a good load brings it back
                page.click("[data-testid=load-user]")
                page.wait_for_function("document.querySelectorAll('[data-testid=watch]').length")
        finally:
            browser.close()
