"""The HTML report, rendered for real in headless Chromium: not blank, and holds the table."""

import os
import shutil
import subprocess
import tempfile

import pytest
from PIL import Image

from tcpmax.lab.report import render_html
from tcpmax.lab.runner import prove

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                reason="Debian's chromium is not installed (.ci/run installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report_file(tmp_path_factory):
    report = prove(["C1", "C8", "C9", "C12"])
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render_html(report))
    return path


def chromium(*args):
    assert CHROMIUM is not None, "CI must install chromium"
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120)


def test_the_report_is_one_self_contained_file(report_file):
    html = report_file.read_text()
    assert "<svg" in html                                  # plots inline
    assert "http://" not in html.split("<svg")[0] and "<script" not in html
    assert 'src="' not in html and "<link" not in html     # nothing fetched


def test_the_rendered_page_holds_the_verdict_table(report_file):
    dom = chromium("--dump-dom", report_file.as_uri()).stdout
    assert 'id="verdicts"' in dom
    for cid in ("C1", "C8", "C9", "C12"):
        assert f'href="#{cid}"' in dom
    assert dom.count("CONFIRMED") >= 4


def test_the_screenshot_is_not_blank_and_shows_the_table(report_file, tmp_path):
    shot = tmp_path / "shot.png"
    chromium("--window-size=1200,1600", f"--screenshot={shot}", report_file.as_uri())
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 1600)
    hist = image.histogram()                             # 256 grey levels
    assert sum(1 for count in hist if count) > 20        # text and plots, not a flat page
    assert sum(hist[:128]) / (1200 * 1600) > 0.005
    # The verdict table sits near the top: its band must hold text.
    band = image.crop((0, 150, 1200, 700)).histogram()
    assert sum(band[:128]) > 2_000
