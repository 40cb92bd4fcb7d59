"""The documentation site as a reader sees it: built with ``mkdocs build --strict`` from
another folder, served on the loopback interface, and opened in headless Chromium (Debian's
``chromium`` package; ``.ci/run`` installs it).  On the home, concepts, tutorial and API
pages the math is typeset by the MathJax copy shipped with the site (no network), no raw
``\\[``/``\\(`` TeX or Sphinx role (``:meth:``, ``:math:``, ...) is left, and every internal
link of the site resolves (page and anchor).  Screenshots of the four pages are written to
``$PREDCODE_DOCS_SCREENSHOTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import functools
import html
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"home": "", "concepts": "concepts/inference/", "tutorial": "tutorials/rules/", "api": "api/core/"}
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROLE = re.compile(r":(meth|math|class|func|attr|mod|exc):`?")


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "headless Chromium is needed: apt-get install chromium (Debian's package)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (pip install 'predcode[docs]')")
    elsewhere = tmp_path_factory.mktemp("elsewhere")  # not the repository: paths must not
    out = tmp_path_factory.mktemp("site")  # depend on the working folder
    done = subprocess.run(
        [mkdocs, "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-5000:]
    return out


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def browse(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"  # a fresh profile each run
    return subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000", *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
    )


def visible_text(dom: str) -> str:
    """The page's text outside scripts, styles, code blocks and typeset math."""
    for tag in ("script", "style", "pre", "code", "mjx-container", "mjx-assistive-mml"):
        dom = re.sub(rf"<{tag}\b.*?</{tag}>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", dom))


@pytest.mark.parametrize("name", list(PAGES))
def test_page_renders_in_chromium(name, site, server, tmp_path):
    url = server + PAGES[name]
    dumped = browse(url, tmp_path, "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    assert "<article" in dom, f"{url}: no page content in the DOM"
    source = (site / PAGES[name] / "index.html").read_text()
    math = source.count('class="arithmatex"')
    typeset = dom.count("<mjx-container")
    assert typeset >= math, f"{url}: {math} math elements, {typeset} typeset"
    text = visible_text(dom)
    for raw in ("\\[", "\\]", "\\("):
        assert raw not in text, f"{url}: raw TeX {raw!r} left: ...{text[text.find(raw) - 80 :][:160]}"
    left = ROLE.search(text)
    assert left is None, f"{url}: Sphinx role left: ...{text[left.start() - 80 : left.end() + 80]}"
    folder = Path(os.environ.get("PREDCODE_DOCS_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / f"{name}.png"
    taken = browse(url, tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", "--hide-scrollbars")
    assert taken.returncode == 0 and shot.stat().st_size > 20_000, taken.stderr[-2000:]


def test_pages_with_math_are_typeset(site):
    """The pages the browser test opens hold math (so its typesetting check is not empty)."""
    for name in ("concepts", "api"):
        assert 'class="arithmatex"' in (site / PAGES[name] / "index.html").read_text()


def test_mathjax_is_shipped_and_nothing_loads_from_the_network(site):
    assert (site / "assets" / "mathjax" / "tex-mml-chtml.js").stat().st_size > 500_000
    assert list((site / "assets" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    remote = re.compile(r"<(?:script|link)\b[^>]*(?:src|href)=\"(https?:)?//", re.I)
    offenders = [str(p.relative_to(site)) for p in site.rglob("*.html") if remote.search(p.read_text())]
    assert not offenders, f"pages loading scripts or styles from the network: {offenders[:5]}"


def test_internal_links_resolve(site):
    ids: dict[Path, set[str]] = {}

    def anchors(page: Path) -> set[str]:
        if page not in ids:
            ids[page] = set(re.findall(r'\bid="([^"]+)"', page.read_text()))
        return ids[page]

    broken = []
    for page in site.rglob("*.html"):
        for href in re.findall(r'\bhref="([^"]+)"', page.read_text()):
            parts = urlsplit(html.unescape(href))
            if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:")):
                continue
            base = site if parts.path.startswith("/") else page.parent  # 404.html: from the root
            target = page if not parts.path else (base / unquote(parts.path).lstrip("/")).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(site)} -> {href}")
            elif parts.fragment and target.suffix == ".html" and parts.fragment not in anchors(target):
                broken.append(f"{page.relative_to(site)} -> {href} (no such anchor)")
    assert not broken, f"{len(broken)} broken links: {broken[:10]}"


def test_tables_list_what_the_registries_hold(site):
    """The rule, solver, model, energy and experiment tables are generated from the code."""
    from predcode.app.config import MODELS, RULES
    from predcode.energy import ENERGIES
    from predcode.experiments import registry
    from predcode.inference import SOLVERS

    pages = {
        "tutorials/mnist/": [*RULES, *SOLVERS, *MODELS],
        "concepts/energy/": list(ENERGIES),
        "tutorials/repro/": list(registry()),
    }
    for page, names in pages.items():
        text = (site / page / "index.html").read_text()
        missing = [n for n in names if f"<code>{n}</code>" not in text]
        assert not missing, f"{page}: not listed: {missing}"
    assert "issue #" not in (site / "tutorials/repro/index.html").read_text()
