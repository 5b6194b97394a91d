"""Run results: histograms, golden signals, summaries, saved runs and DataFrames.

Importing this package is light; pandas loads only when a frame is asked for.
"""

from meshsim.results.histogram import LogHistogram
from meshsim.results.run import MeshResult, Replication, RunResult
from meshsim.results.summary import build_summary

__all__ = ["LogHistogram", "MeshResult", "Replication", "RunResult", "build_summary"]
