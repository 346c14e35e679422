"""Batch runs of the task predictors over images, folders, videos and a webcam: `sapiens2 <task> INPUT...`.

The command line lives in `sapiens2.runner.cli`; the machinery is usable from Python too::

    from sapiens2.runner import RunOptions, run_jobs, collect_sources
"""

from sapiens2.runner.pipeline import RunOptions, RunSummary, run_jobs
from sapiens2.runner.sources import Source, collect_sources

__all__ = ["RunOptions", "RunSummary", "Source", "collect_sources", "run_jobs"]
