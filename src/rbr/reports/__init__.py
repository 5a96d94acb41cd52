"""Reports people read: HTML pages with embedded plots, PNG files and JSON.

The base install imports this package without matplotlib, and only building a
figure needs it (``pip install -e ".[report]"``).
"""

from rbr.reports.html import HtmlReport, ReportError, ReportFiles

__all__ = ["HtmlReport", "ReportError", "ReportFiles"]
