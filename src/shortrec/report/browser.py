"""Open a report in headless Chromium: check that every figure rendered, take a screenshot.

A figure that failed to decode has naturalWidth 0 in a real browser, which no HTML parser
notices. Needs the `playwright` Python package (dev extra) and a Chromium binary on the
machine (`apt-get install chromium`); playwright's own browser download is not used.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from shortrec.io import atomic_path

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
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


@dataclass
class PageCheck:
    images: int
    broken_images: list[str]  # alt text of images that did not render
    sections: list[str]  # ids of the page's <section>s, in order
    external_resources: list[str]  # src/href pointing outside the page (should be none)


def find_chromium() -> str | None:
    """$SHORTREC_CHROMIUM, else the first Chromium on PATH."""
    explicit = os.environ.get("SHORTREC_CHROMIUM")
    if explicit:
        return explicit
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def check_page(
    html_path: str | Path,
    screenshot: str | Path | None = None,
    width: int = 1280,
    height: int | None = None,
) -> PageCheck:
    """Render `html_path` in headless Chromium; optionally write a PNG screenshot of the
    whole page, or of its top `height` pixels (a README picture need not be 6,000 px tall)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise RuntimeError("the browser check needs `pip install playwright`") from exc
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError(
            "no Chromium found; install it (`apt-get install chromium`) or set SHORTREC_CHROMIUM"
        )
    url = Path(html_path).resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(url, wait_until="load")
            result = page.evaluate(
                """() => ({
                    images: document.images.length,
                    broken: [...document.images]
                        .filter(i => !i.complete || i.naturalWidth === 0)
                        .map(i => i.alt || i.src.slice(0, 40)),
                    sections: [...document.querySelectorAll('section')].map(s => s.id),
                    external: [...document.querySelectorAll('[src],[href]')]
                        .map(e => e.getAttribute('src') || e.getAttribute('href'))
                        .filter(u => /^(https?:)?\\/\\//.test(u)),
                })"""
            )
            if screenshot is not None:
                with atomic_path(screenshot) as tmp:
                    clip = (
                        None
                        if height is None
                        else {"x": 0, "y": 0, "width": width, "height": height}
                    )
                    page.screenshot(path=str(tmp), type="png", full_page=True, clip=clip)
        finally:
            browser.close()
    return PageCheck(result["images"], result["broken"], result["sections"], result["external"])
