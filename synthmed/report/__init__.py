"""``synthmed report``: one self-contained HTML file for a study, demo, train, evaluate or downstream folder."""

from synthmed.report.render import write_report

__all__ = ["write_report"]
