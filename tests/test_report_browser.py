"""report.html in a real browser (headless Chromium, offline): it draws, its interactive
slice viewers run, and no script fails. Skipped where Chromium is not installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from test_report import make_run, report_stage

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)"),
]

#: Appended to a copy of the page: once loaded, count the colours each viewer's canvas
#: drew and write them into the DOM (read back with --dump-dom).
PROBE = """<script>
window.addEventListener('load', function () { setTimeout(function () {
  var out = [];
  document.querySelectorAll('iframe').forEach(function (f) {
    var d = f.contentDocument, c = d && d.querySelector('canvas');
    if (!c) { out.push(-1); return; }
    var px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, seen = {};
    for (var i = 0; i < px.length; i += 4 * 7) seen[px[i] + ',' + px[i+1] + ',' + px[i+2]] = 1;
    out.push(Object.keys(seen).length);
  });
  var p = document.createElement('pre'); p.id = 'viewer-colours';
  p.textContent = JSON.stringify(out); document.body.appendChild(p);
}, 500); });
</script>"""


def chromium(tmp_path, url: str, *flags: str) -> subprocess.CompletedProcess:
    """Headless Chromium on ``url``, with every host name unresolvable (a page that
    fetches anything logs a failed load) and console messages logged to stderr."""
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0",
        "--virtual-time-budget=10000", *flags, url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True)


def console_errors(stderr: str) -> list[str]:
    """The page's failing console messages (uncaught errors) from Chromium's log."""
    return [line for line in stderr.splitlines()
            if ":CONSOLE" in line and re.search(r"Uncaught|Error", line)]


def page_requests(netlog) -> list[str]:
    """http(s) URLs the page asked for, from a ``--log-net-log`` file (the browser's own
    background requests, outside the file:// page's network partition, are left out)."""
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [p["url"] for e in log["events"] if e["type"] == start
            and (p := e.get("params", {})).get("url", "").startswith(("http:", "https:"))
            and p.get("network_isolation_key", "").startswith("file:")]


def test_the_checks_see_errors_and_fetches(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><img src='https://example.com/x.png'>"
                   "<script>undefinedFunction();</script></body></html>")
    proc = chromium(tmp_path, bad.as_uri(), "--dump-dom", f"--log-net-log={tmp_path / 'n.json'}")
    assert any("undefinedFunction" in m for m in console_errors(proc.stderr))
    assert "https://example.com/x.png" in page_requests(tmp_path / "n.json")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    import nibabel as nib
    from nilearn import datasets, image

    mni = datasets.load_mni152_brain_mask(resolution=2)
    img = image.resample_img(mni, target_affine=np.diag([8.0, 8.0, 8.0]),
                             interpolation="nearest", force_resample=True, copy_header=True)
    mask_img = nib.Nifti1Image((np.asarray(img.dataobj) > 0).astype(np.uint8), img.affine)
    run, _ = make_run(tmp_path_factory.mktemp("browser") / "run", mask_img, autoencoder=True)
    return report_stage(run, title="Browser check")


def test_page_draws_without_errors(page, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "page.png"
    netlog = tmp_path / "net.json"
    proc = chromium(tmp_path, page.as_uri(), f"--screenshot={shot}", "--window-size=1200,2400",
                    f"--log-net-log={netlog}")
    assert not console_errors(proc.stderr)
    assert not page_requests(netlog)  # works offline: nothing fetched
    pixels = imread(shot)[..., :3].reshape(-1, 3)
    colours = np.unique((pixels * 255).round().astype(np.uint8), axis=0)
    assert len(colours) > 100  # tables, brain maps and viewers, not a blank page
    # the top of the page (title and summary tables) is not all background either
    top = imread(shot)[:400, :, :3].reshape(-1, 3)
    assert (np.abs(top - top[0]).sum(axis=1) > 0.1).mean() > 0.01


def test_viewers_run_offline(page, tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    proc = chromium(tmp_path, probe.as_uri(), "--dump-dom")
    assert not console_errors(proc.stderr)
    found = re.search(r'<pre id="viewer-colours">([^<]*)</pre>', proc.stdout)
    assert found, "the probe did not run"
    colours = json.loads(found.group(1))
    # two viewers (ridge's and the autoencoder's mean r), each drawn in many colours
    assert len(colours) == 2 and min(colours) > 20, colours
