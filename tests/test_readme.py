"""What the README states about the zoo and the output files, checked against the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sapiens2.zoo import MODELS, ModelInfo

README = Path(__file__).resolve().parents[1] / "README.md"


def section(title: str) -> str:
    """The README text from a heading (any level) to the next heading of the same or a higher level."""
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"^(#+) {re.escape(title)}\n", text, re.M)
    assert found, f"README has no section {title!r}"
    level = len(found.group(1))
    rest = text[found.end():]
    nxt = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest[: nxt.start()] if nxt else rest


def table(text: str) -> list[list[str]]:
    """The rows of the first Markdown table in `text`, header excluded, cells stripped."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in lines[2:]]


_TASK_WORDS = {"person detector": "detect"}


def _tasks(cell: str) -> list[tuple[str, int | None]]:
    """`pose (308), seg (29), normal` -> [(pose, 308), (seg, None), (normal, None)]; `pose (17, 133)` -> both."""
    out = []
    for word, numbers in re.findall(r"([a-z][a-z ]*?)(?: \(([^)]*)\))?(?:, |$)", cell):
        task = _TASK_WORDS.get(word, word)
        counts = [int(n) for n in re.findall(r"\d+", numbers)] if task == "pose" and numbers else [None]
        out += [(task, n) for n in counts]
    return out


def _selected(generation: str, task: str, keypoints: int | None) -> list[ModelInfo]:
    gen = {"Sapiens2": 2, "both": 2, "Sapiens v1": 1}[generation]
    return [m for m in MODELS.values() if m.generation == gen and m.task == task
            and (keypoints is None or m.keypoints == keypoints)]


def _repo(pattern: str, m: ModelInfo) -> str:
    suffix = "" if m.format == "pth" else f"-{m.format}"
    return pattern.replace("<size>", m.arch).replace("<task>", m.task).replace("[-<format>]", suffix)


def test_the_model_table_agrees_with_the_zoo():
    covered: set[str] = set()
    for generation, tasks, sizes, formats, repo, licence in table(section("The model zoo")):
        for task, keypoints in _tasks(tasks):
            models = _selected(generation, task, keypoints)
            assert models, f"README promises {generation} {task} ({keypoints}), which the zoo lacks"
            assert sorted({m.arch for m in models}) == sorted(sizes.split(", ")), (generation, task, keypoints)
            assert {m.format for m in models} == set(formats.split(", ")), (generation, task, keypoints)
            assert {m.license for m in models} == {licence}, (generation, task, keypoints)
            pattern = re.search(r"`([^`]+)`", repo).group(1)
            for m in models:
                if repo.startswith("not published"):
                    assert not m.on_hub and m.local_relpath == _repo(pattern, m), m.name
                else:
                    assert m.repo == _repo(pattern, m), m.name
            covered |= {m.name for m in models}
    assert covered == set(MODELS), f"zoo entries the README table does not show: {sorted(set(MODELS) - covered)}"


@pytest.mark.parametrize("bad", ["| Sapiens v1 | pose (308) | 0.3b, 0.6b, 1b, 2b | pth | `facebook/sapiens-<task>-<size>` | CC-BY-NC-4.0 |"])
def test_the_table_check_catches_a_promise_the_zoo_lacks(bad):
    generation, tasks, sizes, *_ = table("|h|\n|-|\n" + bad)[0]
    (task, keypoints), = _tasks(tasks)
    assert sorted({m.arch for m in _selected(generation, task, keypoints)}) != sorted(sizes.split(", "))
