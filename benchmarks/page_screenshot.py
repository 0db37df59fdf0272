"""A screenshot of a local web page in headless Chromium (Debian's `chromium`, as the browser
tests use), for the docs' pictures of TensorBoard and optuna-dashboard:

    tensorboard --logdir sweeps/fast_schedules --port 6006 &
    python benchmarks/page_screenshot.py http://localhost:6006/#custom_scalars docs/sweep_bands.png

Waits for the page to settle (and --wait_for text to appear), then writes a PNG of the window.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import headless_page  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("output", type=Path)
    parser.add_argument("--wait_for", help="text that shows the page has drawn its data")
    parser.add_argument("--click", action="append", default=[], help="text to click, in order")
    parser.add_argument("--settle_ms", type=int, default=3000)
    args = parser.parse_args()
    with headless_page(args.url) as page:
        page.wait_for_load_state("networkidle")
        if args.wait_for:
            page.get_by_text(args.wait_for).first.wait_for(timeout=60_000)
        for text in args.click:
            page.get_by_text(text).first.click()
            page.wait_for_load_state("networkidle")
        page.wait_for_timeout(args.settle_ms)
        page.screenshot(path=str(args.output))
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
