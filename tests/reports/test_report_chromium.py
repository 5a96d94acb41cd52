"""A generated report opened in headless Chromium renders its text and plots."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from rbr.reports import HtmlReport
from rbr.reports.plots import new_figure, weights_bar_chart

BAR_BLUE = np.array([0x1F, 0x77, 0xB4]) / 255.0


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "no Chromium browser on PATH (Debian: apt-get install chromium); the "
        "headless rendering check needs one"
    )


def blue_bar_figure():
    figure = new_figure(5, 3)
    figure.subplots().bar(["a", "b", "c"], [3, 1, 2], color=BAR_BLUE)
    return figure


def test_report_renders_in_chromium(tmp_path):
    browser = find_chromium()
    image = pytest.importorskip("matplotlib.image")
    report = HtmlReport("Rendering check")
    report.add_paragraph("A bar chart in blue and a weights chart follow.")
    report.add_table(["name", "value"], [["a", 3], ["b", 1.5]])
    report.add_figure(blue_bar_figure(), "bars")
    report.add_figure(weights_bar_chart("weights", ["x", "y"], [0.5, -0.25]), "weights")
    files = report.write(tmp_path / "report", "page")
    screenshot = tmp_path / "shot.png"
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={screenshot}",
        "--window-size=1000,1200",
        files.html.resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert screenshot.exists(), (
        f"no screenshot; chromium stderr:\n{result.stderr[-2000:]}"
    )
    pixels = image.imread(screenshot)[:, :, :3]
    assert pixels.shape[:2] == (1200, 1000)
    assert pixels.std() > 0.05, "the screenshot is blank"
    # The embedded bar chart must be drawn: many pixels of its bar colour.
    near_blue = np.abs(pixels - BAR_BLUE).max(axis=2) < 0.03
    assert near_blue.sum() > 2000
