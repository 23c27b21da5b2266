"""The report page in a real browser: headless Chromium (Debian's `chromium`, installed with apt-get when
missing and this is root) loads index.html from disk; every image must decode and the page must render."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess

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
    browser = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=20000",
        "--window-size=1280,1600",
    ]
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
