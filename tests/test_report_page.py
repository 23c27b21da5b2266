"""The report page in a real browser: headless Chromium (Debian's `chromium`, installed with apt-get when
missing and this is root) loads index.html from disk; every image must decode and the page must render."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import IJR_REPORT  # noqa: E402
from synthetic_sweep import make_sweep  # noqa: E402

pytestmark = pytest.mark.system  # installs Debian's chromium with apt-get when it is missing
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CHECK = """<script>
window.addEventListener('load', () => {
  const images = Array.from(document.images).map(i => ({ok: i.complete && i.naturalWidth > 0, width: i.naturalWidth,
                                                         alt: i.alt}));
  const out = document.createElement('pre');
  out.id = 'ijr-check';
  out.textContent = JSON.stringify({images, tables: document.querySelectorAll('table').length,
                                    h1: document.querySelector('h1').textContent,
                                    height: document.body.scrollHeight});
  document.body.appendChild(out);
});
</script>"""


def _headless(chromium, size: str) -> list:
    """Headless Chromium as a container allows it, with time for the page's scripts and a window of `size`."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--virtual-time-budget=20000"]
    return [chromium, *flags, f"--window-size={size}"]


def _browser():
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    found = _browser()
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no chromium, and installing Debian's chromium needs root and apt-get")
    log = tmp_path_factory.mktemp("apt") / "apt.log"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    with open(log, "w") as f:
        if subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=900) != 0:
            subprocess.call(["apt-get", "update", "-q"], stdout=f, stderr=subprocess.STDOUT, env=env, timeout=900)
            subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=900)
    found = _browser()
    if not found:
        pytest.skip("apt-get install chromium failed: " + " | ".join(log.read_text().splitlines()[-3:]))
    return found


def test_index_html_renders_in_chromium_and_every_image_loads(tmp_path, chromium):
    sweep = tmp_path / "lr_bs"
    make_sweep(sweep, [0.01, 0.1], [32, 128], [0, 1], steps=60, every=3)
    proc = subprocess.run([IJR_REPORT, str(sweep), "--theory"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    page = (sweep / "report" / "index.html").read_text()
    assert "src='http" not in page and 'src="http' not in page and "<link" not in page  # self-contained
    n_images = page.count("data:image/png;base64,")
    assert n_images >= 8
    checked = tmp_path / "checked.html"  # the page plus a script that records what the browser saw
    checked.write_text(page.replace("</body>", CHECK + "</body>"))
    browser = _headless(chromium, "1280,1600")
    dom = subprocess.run([*browser, "--dump-dom", checked.as_uri()], capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="ijr-check">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"the page did not load in chromium: {dom.stderr[-1500:]}"
    seen = json.loads(html.unescape(found.group(1)))
    assert len(seen["images"]) == n_images
    assert all(i["ok"] and i["width"] > 100 for i in seen["images"]), [i for i in seen["images"] if not i["ok"]]
    assert seen["tables"] >= 3 and seen["h1"].startswith("ijr report") and seen["height"] > 2000
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*browser, f"--screenshot={shot}", (sweep / "report" / "index.html").as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[1] == 1280 and pixels.reshape(-1, pixels.shape[-1]).std(axis=0).max() > 0.05  # not blank


ERRORS = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message)));
const __consoleError = console.error;
console.error = (...a) => { window.__errors.push(a.join(' ')); __consoleError(...a); };
</script>"""
INTERACT = """<script>
window.addEventListener('load', () => setTimeout(() => {
  const t = document.getElementById('runs-table');
  const heads = Array.from(t.querySelectorAll('thead tr.names th')).map(h => h.textContent);
  const col = heads.indexOf('test_acc (%)');
  const values = () => Array.from(t.tBodies[0].rows).filter(r => !r.hidden).map(r => Number(r.cells[col].dataset.v));
  const before = values();
  t.querySelectorAll('thead tr.names th')[col].click();
  const ascending = values();
  t.querySelectorAll('thead tr.names th')[col].click();
  const descending = values();
  const lr = heads.indexOf('optimizer.lr');
  const box = t.querySelector(`thead input.filter[data-col='${lr}']`);
  box.value = '=0.1';
  box.dispatchEvent(new Event('input'));
  const shown = Array.from(t.tBodies[0].rows).filter(r => !r.hidden).map(r => Number(r.cells[lr].dataset.v));
  const pick = Array.from(t.tBodies[0].rows).find(r => !r.hidden).querySelector('input.pick');
  pick.click();
  const picked = document.querySelectorAll(`path.picked[data-run='${pick.value}']`).length;
  const hiddenPaths = document.querySelectorAll('path.faded').length;
  const out = document.createElement('pre');
  out.id = 'ijr-check';
  out.textContent = JSON.stringify({errors: window.__errors, before, ascending, descending, shown, picked,
    hiddenPaths, rows: t.tBodies[0].rows.length, charts: document.querySelectorAll('svg.chart').length,
    count: document.getElementById('runs-table-count').textContent});
  document.body.appendChild(out);
}, 0));
</script>"""


def _run_in_chromium(chromium, page_path, tmp_path, name, extra_head, extra_body, shot_size="1400,2400"):
    """The page with scripts injected (errors recorded first, `extra_body` last), loaded from disk in headless
    Chromium: the recorded JSON, and a screenshot of the page as it is (kept in the test's artefacts)."""
    page = page_path.read_text()
    checked = page_path.with_name(f".{name}.checked.html")  # beside the page: its relative links still work
    checked.write_text(page.replace("<head>", "<head>" + extra_head, 1).replace("</body>", extra_body + "</body>"))
    browser = _headless(chromium, shot_size)
    try:
        dom = subprocess.run([*browser, "--dump-dom", checked.as_uri()], capture_output=True, text=True, timeout=180)
    finally:
        checked.unlink()
    found = re.search(r'<pre id="ijr-check">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"the page did not load in chromium: {dom.stderr[-1500:]}"
    artefacts = Path(os.environ.get("IJR_TEST_ARTEFACTS", tmp_path))
    artefacts.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [*browser, f"--screenshot={artefacts / (name + '.png')}", page_path.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert (artefacts / f"{name}.png").stat().st_size > 10000
    return json.loads(html.unescape(found.group(1)))


def test_runs_table_sorts_filters_and_highlights_offline_in_chromium(tmp_path, chromium):
    """The interactive runs table in a real browser, offline: no console errors, a click on a heading sorts
    (ascending, then descending; missing values last), a filter hides rows, a ticked run is highlighted in every
    chart and the filtered-out runs leave them; each run page draws its charts without errors."""
    sweep = tmp_path / "lr_bs"
    make_sweep(sweep, [0.01, 0.1, 0.2], [32, 128], [0, 1], steps=40, every=2)
    proc = subprocess.run([IJR_REPORT, str(sweep)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    index = sweep / "report" / "index.html"
    assert "src='http" not in index.read_text() and "<script src" not in index.read_text()  # no CDN
    seen = _run_in_chromium(chromium, index, tmp_path, "runs_table", ERRORS, INTERACT)
    assert seen["errors"] == [] and seen["rows"] == 12
    assert seen["ascending"] == sorted(seen["before"]) and seen["descending"] == sorted(seen["before"])[::-1]
    assert seen["shown"] == [0.1] * 4 and seen["count"] == "4 of 12 runs shown"
    assert seen["picked"] == 3  # the parallel-coordinates line and both overlay charts
    assert seen["hiddenPaths"] == 3 * 8  # the 8 filtered-out runs leave the parallel coordinates and both charts
    run_page = next((sweep / "report" / "runs" / "lr_bs").glob("*.html"))
    check = (
        "<script>window.addEventListener('load', () => { const out = document.createElement('pre'); "
        "out.id = 'ijr-check'; out.textContent = JSON.stringify({errors: window.__errors, "
        "charts: document.querySelectorAll('#trajectories svg.chart').length}); "
        "document.body.appendChild(out); });</script>"
    )
    seen = _run_in_chromium(chromium, run_page, tmp_path, "run_page", ERRORS, check, "1200,1600")
    assert seen["errors"] == [] and seen["charts"] >= 15
