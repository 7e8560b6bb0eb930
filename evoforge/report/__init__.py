"""Run reports: what a search did, as an HTML page with figures (see `collect_run`, `write_report`)."""

from evoforge.report.data import RunData, collect_run
from evoforge.report.writer import write_report

__all__ = ["RunData", "collect_run", "write_report"]
