"""The docs site in a real browser: screenshots at 1280 px and the layout checks a reader would make by eye.

Run by ``make docs-layout`` (it builds the site first and installs playwright, which drives the system's
Chromium: ``$CHROMIUM``, default ``/usr/bin/chromium``; nothing is downloaded). For each page it writes
``<out>/<page>.png`` (full page, 1280 px wide) and checks that:

- every table column headed Δ is visible without scrolling the table sideways;
- no code block needs a horizontal scroll (a command cut off at the right edge);
- ``μ*`` stays ``μ*`` (a stray ``*`` pair turns text into italics);
- the navigation lists the guides before the Python API pages.

Exit 0 when every check passes, else 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["index", "quickstart", "mode-and-mu", "concepts", "results", "serve-vllm", "scale", "integrations"]

OVERFLOW = """() => {
  const problems = [];
  for (const wrap of document.querySelectorAll('.md-typeset__table, .md-typeset__scrollwrap')) {
    const table = wrap.querySelector('table');
    if (!table) continue;
    const right = wrap.getBoundingClientRect().right;
    for (const th of table.querySelectorAll('th')) {
      if (th.textContent.includes('Δ') && th.getBoundingClientRect().right > right + 1) {
        problems.push('table column "' + th.textContent.trim() + '" is hidden behind a horizontal scroll');
      }
    }
  }
  for (const pre of document.querySelectorAll('pre > code')) {
    if (pre.scrollWidth > pre.clientWidth + 1) {
      problems.push('code block cut off: ' + pre.textContent.split('\\n').find(l => l.length > 0).slice(0, 70));
    }
  }
  for (const em of document.querySelectorAll('.md-typeset em')) {
    const before = em.previousSibling && em.previousSibling.textContent || '';
    if (before.endsWith('μ')) problems.push('"μ*" rendered as italics: ' + em.textContent.slice(0, 40));
  }
  return problems;
}"""

NAV = """() => Array.from(document.querySelectorAll('.md-nav--primary > .md-nav__list > .md-nav__item'))
  .map(li => li.textContent.trim().split('\\n')[0].trim())"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, default=ROOT / "site")
    parser.add_argument("--out", type=Path, default=ROOT / "site-screenshots")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        for name in PAGES:
            path = args.site / ("index.html" if name == "index" else f"{name}/index.html")
            page.goto(path.resolve().as_uri())
            page.screenshot(path=str(args.out / f"{name}.png"), full_page=True)
            problems += [f"{name}: {problem}" for problem in page.evaluate(OVERFLOW)]
            if name == "index":
                nav = page.evaluate(NAV)
                if nav and any("API" in item for item in nav[:-1]):
                    problems.append(f"index: the Python API is not last in the navigation: {nav}")
        browser.close()
    for problem in problems:
        print(problem)
    print(f"{len(PAGES)} pages, {len(problems)} problems; screenshots in {args.out}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
