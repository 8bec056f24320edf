"""The HTML report, rendered for real in headless Chromium: not blank, and holds the table."""

import os
import re
import shutil
import subprocess
import tempfile

import pytest
from PIL import Image

from tcpmax.lab.report import render_html
from tcpmax.lab.runner import prove
from tests.conftest import CAN_MAKE_NETNS

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                reason="Debian's chromium is not installed (.ci/run installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


CLAIMS = ["C1", "C8", "C9", "C12"]


@pytest.fixture(scope="module")
def proved():
    return prove(CLAIMS)


@pytest.fixture(scope="module")
def report_file(proved, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render_html(proved))
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


def test_the_rendered_page_holds_the_verdict_table(proved, report_file):
    dom = chromium("--dump-dom", report_file.as_uri()).stdout
    table = dom[dom.index('id="verdicts"'):dom.index("</table>")]
    rows = re.findall(r'<td><a href="#(C\d+)">\1</a></td>\s*<td>.*?</td>\s*'
                      r'<td class="verdict"[^>]*>(\w+)</td>', table, re.DOTALL)
    # One row per claim run, in order, each with the verdict its experiment computed.
    assert rows == [(o.id, o.verdict.value) for o in proved.outcomes]
    assert [cid for cid, _ in rows] == CLAIMS
    verdicts = dict(rows)
    if not CAN_MAKE_NETNS:
        # Without root C9 runs on the host's loopback, or is skipped when it cannot.
        assert verdicts.pop("C9") in ("CONFIRMED", "SKIPPED")
    assert set(verdicts.values()) == {"CONFIRMED"}
    # And each verdict appears once more, over its evidence section.
    assert dom.count('class="verdict"') == 2 * len(CLAIMS)


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
