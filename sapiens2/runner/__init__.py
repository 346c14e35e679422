"""Batch runs of the task predictors over images, folders, videos and a webcam: `sapiens2 <task> INPUT...`.

The command line lives in `sapiens2.runner.cli`; the machinery is usable from Python too::

    from sapiens2.runner import RunOptions, collect_sources, run_jobs

Names are imported on first use, so registering the sub-commands costs nothing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RunOptions", "RunSummary", "Source", "collect_sources", "run_jobs"]

_WHERE = {"RunOptions": "pipeline", "RunSummary": "pipeline", "run_jobs": "pipeline", "Source": "sources",
          "collect_sources": "sources"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(f"sapiens2.runner.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'sapiens2.runner' has no attribute {name!r}")
