"""Run reports: plots of what a run measured and a one-page summary."""

from simsiam.report.run_report import write_report

__all__ = ["write_report"]
