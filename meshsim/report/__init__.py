"""Comparison reports (HTML and Markdown), their figures, findings and costs.

matplotlib and jinja2 are imported here and nowhere in the simulator's core.
"""

from meshsim.report.comparison import Comparison
from meshsim.report.cost import Prices
from meshsim.report.findings import Finding, findings
from meshsim.report.render import render_report

__all__ = ["Comparison", "Finding", "Prices", "findings", "render_report"]
