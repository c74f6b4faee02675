"""`make pdf`: the PDF edition, printed by headless Chromium from the built site.

Every page of ``_toc.yml``, in reading order, is opened from ``_build/html`` (served on
localhost, nothing fetched from elsewhere), MathJax is let finish, and Chromium prints
it with the theme's print stylesheet (no sidebars or buttons); the pages are joined
into ``_build/pdf/book.pdf`` (pypdf) with one bookmark per page. This is what Jupyter
Book's ``pdfhtml`` builder does, with Debian's ``chromium`` and ``chromium-driver`` (the
browser test's) instead of a Chromium that pyppeteer would download.

Usage: python scripts/build_pdf.py [SITE] [OUT]   (after `make book` or `make book-strict`)
"""

from __future__ import annotations

import base64
import io
import sys
import time
from pathlib import Path
from urllib.parse import urljoin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_book_site as site  # noqa: E402  (the browser test's server and browser)


def main(html: Path, out: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    if not (html / "index.html").is_file():
        sys.exit(f"no built book in {html}: run `make book` first")
    server, base = site._serve(html)
    browser = site._make_browser()
    writer = PdfWriter()
    start = time.perf_counter()
    try:
        for page in site.PAGES:
            site._open(browser, urljoin(base, f"{page}.html"))
            browser.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "const wait = () => (window.MathJax && MathJax.startup && MathJax.startup.promise)"
                "  ? MathJax.startup.promise.then(() => done(), () => done())"
                "  : (document.querySelector('.math') ? setTimeout(wait, 100) : done());"
                "wait();"
            )
            # On paper a code line cannot scroll: long lines wrap.
            browser.execute_script(
                "const s = document.createElement('style');"
                "s.textContent = '@media print { pre { white-space: pre-wrap !important;"
                " overflow: visible !important; } }';"
                "document.head.appendChild(s);"
            )
            # DevTools' printToPDF (WebDriver's print times out on a busy machine).
            printed = browser.execute_cdp_cmd("Page.printToPDF", {
                "printBackground": True, "paperWidth": 8.27, "paperHeight": 11.69})  # A4
            pdf = PdfReader(io.BytesIO(base64.b64decode(printed["data"])))
            first = len(writer.pages)
            for p in pdf.pages:
                writer.add_page(p)
            title = browser.title.split("—")[0].split(" - ")[0].strip() or page
            writer.add_outline_item(title=title, page_number=first)
            print(f"{page}: {len(pdf.pages)} pages")
    finally:
        browser.quit()
        server.shutdown()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        writer.write(f)
    print(f"{out}: {len(writer.pages)} pages in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(Path(args[0]) if args else ROOT / "_build" / "html",
         Path(args[1]) if len(args) > 1 else ROOT / "_build" / "pdf" / "book.pdf")
