"""HtmlReport: escaping, embedded figures, no network resources, atomic writes."""

from __future__ import annotations

import base64
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from rbr.errors import OutputError
from rbr.reports import HtmlReport, ReportError
from rbr.reports.html import format_number
from rbr.reports.plots import new_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class TagCollector(HTMLParser):
    """Collect tags with their attributes, and the text of table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_cell = tag in ("td", "th")
        if self._in_cell:
            self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells[-1] += data


def parse(text: str) -> TagCollector:
    collector = TagCollector()
    collector.feed(text)
    return collector


def line_figure():
    figure = new_figure(3, 2)
    figure.subplots().plot([0, 1, 2], [2, 0, 1])
    return figure


def sample_report() -> HtmlReport:
    report = HtmlReport("Scores <b>& more</b>")
    report.add_heading("Section <i>one</i>")
    report.add_paragraph('He said "<script>alert(1)</script>"')
    report.add_table(
        ["name", "value"],
        [["a<b", 0.12345], ["none", None], ["count", 7]],
        caption="Caption <u>",
    )
    report.add_figure(line_figure(), "line", caption="A line")
    report.data = {"value": np.float32(0.5), "missing": float("nan"), "ids": (1, 2)}
    return report


def test_text_is_escaped():
    text = sample_report().to_html()
    assert "<script>" not in text
    assert "&lt;script&gt;" in text
    assert "Scores &lt;b&gt;&amp; more&lt;/b&gt;" in text
    assert "a&lt;b" in text
    assert "Caption &lt;u&gt;" in text


def test_no_external_resources():
    text = sample_report().to_html()
    tags = parse(text).tags
    assert not re.search(r"https?://", text)
    assert all(tag not in ("script", "link", "iframe") for tag, _ in tags)
    sources = [attrs.get("src") or "" for tag, attrs in tags if tag == "img"]
    assert sources
    assert all(src.startswith("data:image/png;base64,") for src in sources)


def test_figure_embedded_and_saved(tmp_path):
    report = sample_report()
    files = report.write(tmp_path, "page")
    png_path = tmp_path / "line.png"
    assert files.figures == (png_path,)
    saved = png_path.read_bytes()
    assert saved.startswith(PNG_SIGNATURE)
    tags = parse(files.html.read_text(encoding="utf-8")).tags
    src = next(attrs["src"] for tag, attrs in tags if tag == "img")
    embedded = base64.b64decode(src.split(",", 1)[1])
    assert embedded == saved


def test_table_cells_formatted(tmp_path):
    cells = parse(sample_report().to_html()).cells
    assert cells == ["name", "value", "a<b", "0.123", "none", "–", "count", "7"]


def test_json_written_from_data(tmp_path):
    files = sample_report().write(tmp_path, "page")
    data = json.loads(files.json.read_text(encoding="utf-8"))
    assert data == {"value": 0.5, "missing": None, "ids": [1, 2]}


def test_write_leaves_only_outputs(tmp_path):
    sample_report().write(tmp_path, "page")
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["line.png", "page.html", "page.json"]


def test_invalid_data_writes_nothing(tmp_path):
    report = sample_report()
    report.data["bad"] = object()
    with pytest.raises(TypeError):
        report.write(tmp_path / "out", "page")
    assert not (tmp_path / "out").exists()


def test_unwritable_folder_names_path(tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")
    with pytest.raises(OutputError) as info:
        sample_report().write(blocker / "sub", "page")
    assert str(blocker / "sub") in str(info.value)
    assert "--out" in str(info.value)


@pytest.mark.parametrize("name", ["../up", "a/b", "", ".hidden"])
def test_figure_name_must_be_plain(name):
    report = HtmlReport("t")
    with pytest.raises(ReportError, match="plain file name"):
        report.add_figure(line_figure(), name)


def test_stem_must_be_plain(tmp_path):
    with pytest.raises(ReportError, match="plain file name"):
        HtmlReport("t").write(tmp_path, "../page")


def test_figure_name_used_twice():
    report = HtmlReport("t")
    report.add_figure(line_figure(), "same")
    with pytest.raises(ReportError, match="used twice"):
        report.add_figure(line_figure(), "same")


def test_table_row_length_checked():
    with pytest.raises(ReportError) as info:
        HtmlReport("t").add_table(["a", "b"], [[1, 2], [3]])
    assert "row 1 has 1 cells" in str(info.value)


def test_pyplot_figure_closed():
    pyplot = pytest.importorskip("matplotlib.pyplot")
    figure = pyplot.figure()
    figure.add_subplot().plot([1, 2])
    HtmlReport("t").add_figure(figure, "pyplot")
    assert not pyplot.fignum_exists(figure.number)


def test_missing_matplotlib_names_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ReportError) as info:
        new_figure(2, 2)
    assert 'pip install -e ".[report]"' in str(info.value)


def test_package_import_needs_no_matplotlib():
    # Importing the reports package must not import matplotlib, so the base
    # install keeps working; run in a fresh interpreter to see the real imports.
    import subprocess

    code = "import sys, rbr.reports, rbr.cli.main; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (-1e-9, "0.000"),
        (-0.5, "-0.500"),
        (float("nan"), "n/a"),
        (None, "–"),
        (np.int64(4), "4"),
        (True, "yes"),
    ],
)
def test_format_number(value, expected):
    assert format_number(value) == expected
