"""docs/CLI.md, generated from the parser itself so that it cannot drift: `python -m sapiens2.cli_reference`.

A test renders it and compares it with the file in the repository.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["render"]

WIDTH = "100"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _outputs_table() -> list[str]:
    from sapiens2.task_table import SAVE_KINDS, TASKS
    from sapiens2.tasks.outputs import FILES, video_suffixes

    rows = ["| task | " + " | ".join(f"`{k}`" for k in SAVE_KINDS) + " | video |",
            "|---" * (len(SAVE_KINDS) + 2) + "|"]
    for task, info in TASKS.items():
        cells = []
        for kind in SAVE_KINDS:
            names = [s for k, s in FILES[task] if k == kind]
            star = "\\*" if kind in info.default_saves else ""
            cells.append(", ".join(f"`{n}`" for n in names) + (star if names else ""))
        cells.append(", ".join(f"`{s}`" for s in video_suffixes(task, info.saves)))
        rows.append(f"| {task} | " + " | ".join(cells) + " |")
    return rows


def render() -> str:
    """The whole reference: exit codes, output files, then every sub-command's --help."""
    from sapiens2.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH  # argparse wraps to the terminal: fix it so the text is the same everywhere
    try:
        parser = build_parser()
        lines = [
            "# The `sapiens2` command line",
            "",
            "Generated from the parser by `python -m sapiens2.cli_reference > docs/CLI.md`; a test keeps it in step.",
            "",
            "Exit codes of the task commands: `0` every input done; `1` some inputs failed (listed in "
            "`<out>/errors.json`); `2` the run could not start (bad option, missing weights, no input); "
            "`130` interrupted (Ctrl-C).",
            "",
            "## Output files",
            "",
            "Every input `in/a/x.jpg` writes `out/a/x<suffix>` for each kind asked for with `--save` "
            "(\\* = written when `--save` is not given). Videos write the annotated video and (pose) one JSON "
            "of every frame beside the folder `out/a/x/` that holds the other kinds per frame "
            "(`000000_seg.npy`, ...).",
            "",
            *_outputs_table(),
            "",
            "```text",
            parser.format_help().rstrip(),
            "```",
        ]
        for name, sub in _subcommands(parser).items():
            lines += ["", f"## sapiens2 {name}", "", "```text", sub.format_help().rstrip(), "```"]
        return "\n".join(lines) + "\n"
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render())
