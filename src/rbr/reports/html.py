"""Self-contained HTML reports with embedded figures and a JSON twin.

An :class:`HtmlReport` collects headings, paragraphs, tables and matplotlib
figures. It writes three kinds of file into one folder: ``STEM.html`` (inline
CSS, figures embedded as base64 PNG, no scripts and no network resources),
``STEM.json`` (the :attr:`HtmlReport.data` dictionary) and one ``NAME.png`` per
figure. Every file is written atomically, and the HTML is written last, so a
failed run never leaves an HTML page that points at missing data.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbr.data.io import atomic_output, json_safe
from rbr.errors import OutputError, RbrError

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
FIGURE_DPI = 100

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #1d1d1f;
  line-height: 1.45; }
h1 { font-size: 1.7em; border-bottom: 2px solid #d0d4da; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 1.8em; }
p { max-width: 60em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
caption { caption-side: top; text-align: left; font-weight: 600;
  padding-bottom: .4em; }
th, td { border: 1px solid #d0d4da; padding: .3em .7em; }
th { background: #f2f4f7; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e6ea; }
figcaption { font-size: .9em; color: #4a4f57; margin-top: .3em; }
"""


class ReportError(RbrError):
    """A report cannot be built from the given input or options."""


@dataclass(frozen=True)
class ReportFiles:
    """Paths of the files one :meth:`HtmlReport.write` call produced."""

    html: Path
    json: Path
    figures: tuple[Path, ...]


@dataclass(frozen=True)
class _Figure:
    name: str
    png: bytes
    caption: str | None


class HtmlReport:
    """A report page built block by block and written as HTML, JSON and PNGs.

    Attributes:
        title: Page title, shown as the top heading.
        data: Dictionary written as ``STEM.json``. Callers put the numbers the
            page shows here, so tools can read them without parsing HTML.
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self.data: dict[str, Any] = {}
        self._blocks: list[str] = []
        self._figures: list[_Figure] = []

    def add_heading(self, text: str) -> None:
        """Append a section heading."""
        self._blocks.append(f"<h2>{html.escape(text)}</h2>")

    def add_paragraph(self, text: str) -> None:
        """Append a paragraph of plain text (escaped, not interpreted as HTML)."""
        self._blocks.append(f"<p>{html.escape(text)}</p>")

    def add_table(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        caption: str | None = None,
    ) -> None:
        """Append a table. Floats show three decimals and None shows as a dash.

        Raises:
            ReportError: When a row's length differs from the number of columns.
        """
        for index, row in enumerate(rows):
            if len(row) != len(columns):
                raise ReportError(
                    f"table row {index} has {len(row)} cells but there are "
                    f"{len(columns)} columns {list(columns)}; give one cell per column"
                )
        parts = ["<table>"]
        if caption:
            parts.append(f"<caption>{html.escape(caption)}</caption>")
        header = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        parts.append(f"<thead><tr>{header}</tr></thead><tbody>")
        for row in rows:
            parts.append("<tr>" + "".join(_table_cell(v) for v in row) + "</tr>")
        parts.append("</tbody></table>")
        self._blocks.append("".join(parts))

    def add_figure(self, fig: Any, name: str, caption: str | None = None) -> None:
        """Render a matplotlib figure to PNG, embed it and save it as ``NAME.png``.

        The figure is rendered now, so later changes to it do not show. A
        figure created through ``matplotlib.pyplot`` is closed afterwards.

        Raises:
            ReportError: When ``name`` is not a plain file name or is already used.
        """
        if not _SAFE_NAME.match(name):
            raise ReportError(
                f"figure name {name!r} is not a plain file name; use letters, "
                "digits, '_', '-' and '.' only"
            )
        if any(figure.name == name for figure in self._figures):
            raise ReportError(
                f"figure name {name!r} is used twice; give each a new name"
            )
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(fig)
        self._figures.append(_Figure(name, buffer.getvalue(), caption))
        self._blocks.append(_figure_html(self._figures[-1]))

    @property
    def figure_names(self) -> list[str]:
        """Names of the figures added so far, in order."""
        return [figure.name for figure in self._figures]

    def to_html(self) -> str:
        """Return the whole page as one HTML string."""
        body = "\n".join(self._blocks)
        title = html.escape(self.title)
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>{title}</h1>\n{body}\n</body>\n</html>\n"
        )

    def write(self, out_dir: str | Path, stem: str) -> ReportFiles:
        """Write ``STEM.html``, ``STEM.json`` and each figure's PNG into ``out_dir``.

        Raises:
            ReportError: When ``stem`` is not a plain file name.
            TypeError: When :attr:`data` contains a value JSON cannot represent.
            OutputError: When ``out_dir`` cannot be created or written.
        """
        if not _SAFE_NAME.match(stem):
            raise ReportError(
                f"report name {stem!r} is not a plain file name; use letters, "
                "digits, '_', '-' and '.' only"
            )
        # Serialize first, so invalid data fails before any file is written.
        json_text = json.dumps(
            json_safe(_plain(self.data)), indent=2, ensure_ascii=False
        )
        html_text = self.to_html()
        out_dir = Path(out_dir)
        json_path = out_dir / f"{stem}.json"
        html_path = out_dir / f"{stem}.html"
        figure_paths = [out_dir / f"{figure.name}.png" for figure in self._figures]
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            for figure, path in zip(self._figures, figure_paths):
                with atomic_output(path, binary=True) as handle:
                    handle.write(figure.png)
            with atomic_output(json_path) as handle:
                handle.write(json_text + "\n")
            with atomic_output(html_path) as handle:
                handle.write(html_text)
        except OSError as error:
            raise OutputError(
                f"cannot write the report into {out_dir}: {error.strerror or error}; "
                "choose a writable folder with --out"
            ) from None
        return ReportFiles(html_path, json_path, tuple(figure_paths))


def _table_cell(value: Any) -> str:
    if value is None:
        return '<td class="num">–</td>'
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, (int, float)) or hasattr(value, "item"):
        return f'<td class="num">{html.escape(format_number(value))}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def format_number(value: Any, digits: int = 3) -> str:
    """Format a number for a table: integers as is, floats with ``digits`` decimals.

    NaN and infinities show as ``n/a``, and None shows as a dash.
    """
    if value is None:
        return "–"
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        text = f"{value:.{digits}f}"
        # A tiny negative value would show as "-0.000".
        return text.removeprefix("-") if float(text) == 0 else text
    return str(value)


def _figure_html(figure: _Figure) -> str:
    encoded = base64.b64encode(figure.png).decode("ascii")
    alt = html.escape(figure.caption or figure.name)
    parts = [
        f'<figure id="fig-{html.escape(figure.name)}">',
        f'<img alt="{alt}" src="data:image/png;base64,{encoded}">',
    ]
    if figure.caption:
        parts.append(f"<figcaption>{html.escape(figure.caption)}</figcaption>")
    parts.append("</figure>")
    return "".join(parts)


def _plain(value: Any) -> Any:
    """Convert numpy values, tuples and paths to plain JSON types, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    return value
