"""`python bench/browser_watch.py URL [KEY]`: the dashboard at URL open in a headless Chromium
(the distribution's, driven by Playwright), following the live feed as a person's page would,
until a line arrives on stdin; then it prints the number of requests the page was pushed, as
JSON. It prints `ready` once the page follows the feed. Bounded: it gives up after 30 minutes.
"""

from __future__ import annotations

import json
import select
import shutil
import sys
import time

from playwright.sync_api import sync_playwright

LIMIT_S = 1_800.0


def main() -> None:
    url = sys.argv[1]
    key = sys.argv[2] if len(sys.argv) > 2 else None
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            if key:
                page.add_init_script(f"sessionStorage.setItem('pirouter-key', {json.dumps(key)})")
            page.goto(url + "/")
            page.wait_for_selector("#livestate:text-is('following')", timeout=30_000)
            print("ready", flush=True)
            deadline = time.monotonic() + LIMIT_S
            while time.monotonic() < deadline:
                if select.select([sys.stdin], [], [], 0.5)[0]:
                    break
                page.wait_for_timeout(1)  # let the page's own work run
            seen = page.evaluate("window.pirouterLiveSeen()")
        finally:
            browser.close()
    print(json.dumps({"seen": seen}), flush=True)


if __name__ == "__main__":
    main()
