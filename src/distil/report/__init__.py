"""Reports people can look at: summary tables, plots and one self-contained HTML page."""

from distil.report.html import write_report
from distil.report.markdown import markdown_table
from distil.report.runs import RunRecord, load_run, summary_rows

__all__ = ["RunRecord", "load_run", "markdown_table", "summary_rows", "write_report"]
